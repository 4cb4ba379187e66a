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


class RecipientError(FaceveilError):
    """A public-key recipient (``-r``, ``-R``) is malformed or of a type age does not
    support: exit 2, as for a malformed command line."""

    exit_code = 2


class WrongKeyError(FaceveilError):
    """The key does not match the one the file was anonymized with."""

    exit_code = 3


class MetadataError(FaceveilError):
    """faceveil metadata is missing, truncated, of an unknown version or tampered."""

    exit_code = 4


class ModelError(FaceveilError):
    """A model cannot be found, loaded, or is not the one a file was made with."""

    exit_code = 5


MODELS_EXTRA = "pip install 'faceveil[models]'"
# The packages of the models extra (pyproject.toml), by their import names.
MODELS_MODULES = ("torch", "diffusers", "huggingface_hub")


class MissingExtraError(ModelError):
    """Part of faceveil needs packages of the ``models`` extra (torch, diffusers,
    huggingface_hub) that this installation lacks: exit status 5, naming the extra."""

    def __init__(self, what: str, module: str) -> None:
        super().__init__(
            f"{what} needs {module}, which is not installed (faceveil's light install "
            f"runs only the built-in model through onnxruntime): {MODELS_EXTRA}")

    @classmethod
    def of(cls, error: BaseException, what: str = "this command") -> MissingExtraError | None:
        """The error to report for ``error`` when it is an import of the models extra
        that failed (else None)."""
        name = getattr(error, "name", None) or ""
        if isinstance(error, ImportError) and name.partition(".")[0] in MODELS_MODULES:
            return cls(what, name.partition(".")[0])
        return None


class NoFaceError(FaceveilError):
    """No face was found in an image where one was required."""

    exit_code = 6


class KeyWarning(UserWarning):
    """A key that works but is poorly protected (a key file others can read, a short
    passphrase): said, not refused."""
