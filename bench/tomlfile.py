"""Reading a TOML file the user named (a suite, a tolerances file) into a table, or a one-line UserError."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .errors import UserError


def read(path: Path, what: str) -> dict[str, Any]:
    """The table in the TOML file at `path`; UserError naming `what` (e.g. "suite") and the file when it is
    missing, a folder, unreadable, not UTF-8 or not valid TOML."""
    where = f"{what} {path}"
    try:
        return tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{where} is a folder, not a TOML file") from None
    except OSError as error:
        raise UserError(f"{where}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise UserError(f"{where}: not UTF-8 text (byte 0x{byte:02x} at offset {error.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{where}: invalid TOML: {' '.join(str(error).split())}") from None
