"""Exceptions faceveil raises for problems a user can fix.

Every error meant for a person derives from :class:`FaceveilError`; the CLI prints
its message without a traceback and exits with :attr:`FaceveilError.exit_code`.
"""

from __future__ import annotations


class FaceveilError(Exception):
    """A problem with the user's input, files or environment (not a bug)."""

    exit_code = 1


class InputError(FaceveilError):
    """An input image, mask or option cannot be used."""


class KeyMaterialError(FaceveilError):
    """A key file or passphrase cannot be read."""


class WrongKeyError(FaceveilError):
    """The key does not match the one the file was anonymized with."""

    exit_code = 3


class MetadataError(FaceveilError):
    """faceveil metadata is missing, truncated, of an unknown version or tampered."""

    exit_code = 4


class ModelError(FaceveilError):
    """A model cannot be found, loaded, or is not the one a file was made with."""

    exit_code = 5


class NoFaceError(FaceveilError):
    """No face was found in an image where one was required."""

    exit_code = 6


class KeyWarning(UserWarning):
    """A key that works but is poorly protected (a key file others can read, a short
    passphrase): said, not refused."""
