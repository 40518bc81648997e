"""Where bytes live (stores, blobs, key/value adapters) and how objects become bytes (the codec).

:mod:`.base` is the store protocol, implemented by :mod:`.local` (diskcache +
blob files), :mod:`.shared` (Redis, fsspec) and :mod:`.memory`;
:mod:`.manifest` holds the typed records; :mod:`.codec` turns objects into
bytes without I/O, and :mod:`.values` writes those bytes to blobs and back.
"""
