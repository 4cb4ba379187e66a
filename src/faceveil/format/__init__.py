"""The faceveil file format: typed records, and the one place they are authenticated.

- :mod:`.fields`: reading and writing record fields with bounds (base64, zlib, masks);
- :mod:`.records`: the typed records of a photo or video frame (no cryptography);
- :mod:`.auth`: stored bytes, digests, MACs and the sealing of faces and metadata;
  :func:`.auth.open` always verifies, :func:`.auth.open_unauthenticated` is the named
  door for deniable files;
- :mod:`.png`: where a photo's record lives (a PNG chunk, a sidecar);
- :mod:`.clip`: a video's frame records, its clip record and their hash chain.

Formats 1 and 2 (faceveil 0.1 and 0.2) are still read; tests/vectors holds golden files
of each.
"""
