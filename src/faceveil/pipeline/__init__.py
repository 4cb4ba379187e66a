"""The one pipeline every path goes through (photo, folder, video, Ray, web page).

- :mod:`.results`: what comes out (:class:`~.results.Anonymized`,
  :class:`~.results.Recovered`) and how any image input is decoded;
- :mod:`.generate`: faces through the engine under their keys;
- :mod:`.pixels`: window hashes, precision residuals, sealed original pixels;
- :mod:`.anonymize`: regions in, new faces and records out;
- :mod:`.recover`: records and pixels in, the original faces back.

It knows faces, keys and the file format, but no file system, no command line and no
web: :mod:`faceveil.api` and :mod:`faceveil.video` drive it.
"""
