"""The last line is the message: one line naming the file or key, what is wrong and the fix.

MONAI's bundle CLI wraps every error raised while a config is evaluated in ``RuntimeError: Failed to
evaluate ConfigExpression`` (75 to 325 lines of chained tracebacks), which buries emseg's own message.
:func:`user_message` finds the error that started the chain; :func:`report` prints it as the last line
and keeps the full traceback in a file (or on the terminal with ``EMSEG_TRACEBACK=1``). emseg installs
:func:`report` as the exception hook of ``python -m monai.bundle`` when a bundle config imports emseg,
and the ``emseg`` command uses it for its own errors.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path

TRACEBACK_ENV = "EMSEG_TRACEBACK"


def error_chain(error: BaseException) -> list[BaseException]:
    """``error`` and the errors it was raised from (``raise ... from``) or while handling, outermost first."""
    chain = [error]
    while True:
        last = chain[-1]
        cause = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if cause is None or any(cause is seen for seen in chain):
            return chain
        chain.append(cause)


def _ours(error: BaseException) -> bool:
    """Whether emseg raised ``error`` (its own type, or raised by its code): its message names the file or key."""
    if type(error).__module__.startswith("emseg"):
        return True
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("emseg")


def user_message(error: BaseException) -> str:
    """One line for the user: the message of the outermost emseg error in the chain (emseg's errors name the file
    or key and the fix), else of the error that started the chain, with its type."""
    chain = error_chain(error)
    ours = [e for e in chain if _ours(e)]
    cause = ours[0] if ours else chain[-1]
    message = " ".join(str(cause).split())
    if isinstance(cause, KeyboardInterrupt):
        return f"stopped ({message})" if message else "stopped"
    if not message:
        return type(cause).__name__
    if ours:
        return message
    return f"{type(cause).__name__}: {message}{_config_item(chain)}"


def _config_item(chain: list[BaseException]) -> str:
    """`` (in config item ...)``: the innermost config item MONAI was building or evaluating, if any."""
    for error in reversed(chain):
        text = " ".join(str(error).split())
        for prefix in ("Failed to instantiate ", "Failed to evaluate "):
            if text.startswith(prefix):
                item = text[len(prefix):].split(" set '_mode_")[0]
                item = item.replace("ConfigExpression: ", "").replace("ConfigComponent: ", "")
                return f" (in config item {item[:240]}{'...' if len(item) > 240 else ''})"
    return ""


def report(error_type, error: BaseException, tb, stream=None) -> Path | None:
    """Print the full traceback to a file (or, with ``EMSEG_TRACEBACK=1``, to ``stream``), then the user message
    as the last line of ``stream``; return the traceback file."""
    stream = stream or sys.stderr
    sys.stdout.flush()
    text = "".join(traceback.format_exception(error_type, error, tb))
    log = None
    if os.environ.get(TRACEBACK_ENV):
        stream.write(text)
    else:
        fd, name = tempfile.mkstemp(prefix="emseg-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        log = Path(name)
        stream.write(f"(full traceback in {log}; set {TRACEBACK_ENV}=1 to print it here)\n")
    stream.write(f"emseg: error: {user_message(error)}\n")
    stream.flush()
    return log


def require_flag(value, key: str) -> bool:
    """``value`` of the yes/no setting ``key`` if it is a bool; anything else is refused, naming the key. MONAI's CLI
    passes ``--overwrite false`` as the text ``"false"`` (only ``True``/``False`` are read as booleans), and a
    non-empty text counts as true: taken as it is, it would overwrite, download or register against the user's
    word."""
    if isinstance(value, bool):
        return value
    raise ValueError(f"{key} must be True or False, got {value!r}; on the command line write --{key} True or "
                     f"--{key} False (capitalised, as Python writes them)")


def _bundle_cli_hook(error_type, error, tb) -> None:
    report(error_type, error, tb)


def install_for_monai_cli() -> None:
    """Make :func:`report` the exception hook when this process is MONAI's bundle CLI (``python -m monai.bundle``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "monai.bundle.__main__" and sys.excepthook is sys.__excepthook__:
        sys.excepthook = _bundle_cli_hook
