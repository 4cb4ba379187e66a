"""faceveil's local web page (``faceveil serve``): anonymize, review and recover photos
in a browser, on this machine only.

:mod:`faceveil.web.command` is the click command (it imports nothing heavy, so the
command line starts fast and ``--help`` works without the ``web`` extra);
:mod:`faceveil.web.app` is the Starlette application; ``static/`` holds the page
(plain HTML, JavaScript and CSS, nothing fetched from elsewhere).
"""
