"""Teaching-style notebooks with every code cell wrapped in ``%%step``: the replay in a new
kernel shows exactly what a plain run shows, and leaves the kernel in the same state.

The notebooks are written here in the style of public teaching notebooks (helpers
and display classes in cells, seeded randomness, pandas, matplotlib, classes used
across cells); a last, unwrapped cell prints the kernel's state after the replay.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_edit_and_replay import SETUP, execute, plain

pytestmark = pytest.mark.timeout(600)

HANDBOOK = [
    """import random
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
np.random.seed(0)
random.seed(0)

class display:
    \"\"\"Display several objects side by side, by name (its repr reads notebook globals).\"\"\"
    def __init__(self, *args):
        self.args = args
    def __repr__(self):
        return "\\n\\n".join(a + "\\n" + repr(eval(a)) for a in self.args)""",
    """def make_df(cols, ind):
    \"\"\"Quickly make a DataFrame\"\"\"
    data = {c: [str(c) + str(i) for i in ind] for c in cols}
    return pd.DataFrame(data, ind)

df1 = make_df("AB", [1, 2])
df2 = make_df("AB", [3, 4])
display("df1", "df2")""",
    """display("pd.concat([df1, df2])")""",
    """left = pd.DataFrame({"key": ["a", "b", "c"], "x": [1, 2, 3]})
right = pd.DataFrame({"key": ["a", "b", "d"], "y": [10, 20, 40]})
merged = pd.merge(left, right, on="key", how="outer")
merged""",
    """sales = pd.DataFrame({
    "region": np.random.choice(["north", "south"], 20),
    "amount": np.random.randint(1, 100, 20),
})
sales.groupby("region").amount.agg(["sum", "mean", "count"])""",
    """fig, ax = plt.subplots(figsize=(4, 3))
ax.plot(np.random.randn(30).cumsum(), "k--")
ax.set_xlabel("step");""",
    """from matplotlib.ticker import MultipleLocator
ax.xaxis.set_major_locator(MultipleLocator(5))
ax.set_title("random walk")
fig""",
    """from dataclasses import dataclass
from enum import Enum

class Kind(Enum):
    FRUIT = 1
    VEG = 2

@dataclass(frozen=True)
class Product:
    name: str
    kind: Kind

basket = [Product("apple", Kind.FRUIT), Product("leek", Kind.VEG)]
basket""",
    """counts = {}
for p in basket:
    match p.kind:
        case Kind.FRUIT:
            counts["fruit"] = counts.get("fruit", 0) + 1
        case _:
            counts["other"] = counts.get("other", 0) + 1
print(counts, Product("apple", Kind.FRUIT) in basket)""",
]
HANDBOOK_PROBE = """print(np.random.rand(2), random.random())
print(isinstance(basket[0], Product), basket[0].kind is Kind.FRUIT, list(df1.columns))
print(fig.axes[0] is ax, ax.get_title(), len(ax.get_xticks()))"""

TRAINING = [
    """import os
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
rng = np.random.default_rng(42)""",
    """def make_data(n, rng):
    X = rng.normal(size=(n, 2))
    y = X @ np.array([2.0, -3.0]) + 0.5 + rng.normal(scale=0.1, size=n)
    return X, y

X, y = make_data(200, rng)
X.shape, round(float(y.mean()), 4)""",
    """def train(X, y, lr=0.1, epochs=50):
    w, b, losses = np.zeros(X.shape[1]), 0.0, []
    for _ in range(epochs):
        err = X @ w + b - y
        losses.append(float((err ** 2).mean()))
        w -= lr * 2 * X.T @ err / len(y)
        b -= lr * 2 * err.mean()
    return w, b, losses

w, b, losses = train(X, y)
print(np.round(w, 3), round(b, 3))""",
    """plt.figure(figsize=(4, 3))
plt.plot(losses)
plt.yscale("log")
plt.show()""",
    """X_test, y_test = make_data(50, rng)
mse = float(((X_test @ w + b - y_test) ** 2).mean())
print(f"test MSE {mse:.4f}")""",
    """os.environ["TRAINING_MODE"] = "fast"
pd.set_option("display.precision", 3)
report = pd.DataFrame({"w": w, "feature": ["x0", "x1"]})
report""",
]
TRAINING_PROBE = """print(rng.integers(0, 1000, 3), os.environ["TRAINING_MODE"])
print(report)"""


def wrapped(cells: list[str]) -> list[str]:
    return [f"%%step key=c{i}\n{source}" for i, source in enumerate(cells)]


@pytest.mark.parametrize(
    ("cells", "probe"),
    [(HANDBOOK, HANDBOOK_PROBE), (TRAINING, TRAINING_PROBE)],
    ids=["handbook", "training"],
)
def test_a_notebook_wrapped_cell_by_cell_replays_exactly_as_a_plain_run(
    tmp_path: Path, cells: list[str], probe: str
) -> None:
    store, log = tmp_path / "store", tmp_path / "ran.log"
    notebook = [SETUP, *wrapped(cells), probe]
    truth, _ = execute(plain(notebook), tmp_path, tmp_path / "unused", log)
    first, _ = execute(notebook, tmp_path, store, log)
    replay, notes = execute(notebook, tmp_path, store, log)
    assert first == truth
    assert replay == truth
    restored = [n for n in notes if "restored 'c" in n]
    assert len(restored) == len(cells), [n for n in notes if "restored" not in n]
