"""Entry-point plumbing shared by the scripts: parse, check the inputs before any work, one-line user errors.

    if __name__ == "__main__":
        run_cli(main, PretrainArguments, section="pretrain")

A user error (bad config value, missing file or folder, missing token, unknown dataset or split, unreachable
Hub) ends with ONE line `error: <what> ...` on stderr and exit code 2, printed by the main process only (under
`accelerate launch` every process fails the same way; use `accelerate launch --quiet` so the launcher adds no
trace of its own). `--debug` or `CLEFT_DEBUG=1` shows the full traceback instead. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
import os
from pathlib import Path
import sys
from typing import Any

USAGE_EXIT_CODE = 2
_HUB_CLIENT_MODULES = ("httpx", "httpx2", "requests", "urllib3")
# RuntimeErrors of the trainer that report a state of the run, not a bug (their messages say what to do).
_USER_RUNTIME_ERRORS = ("NonFiniteLossError", "NonFiniteWeightsError", "CheckpointError", "OutputDirInUseError")


def debug_requested(argv: list[str] | None = None) -> bool:
    """`--debug` on the command line or CLEFT_DEBUG set to a true value."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("CLEFT_DEBUG", "").lower() in ("1", "true", "yes", "on")


def is_main_process() -> bool:
    """Rank 0 of a `accelerate launch` / torchrun run (or a plain `python` run)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def user_error_message(error: BaseException) -> str | None:
    """The one line for a user error, or None when `error` is a bug (keeps its traceback)."""
    if type(error).__module__.split(".")[0] in _HUB_CLIENT_MODULES:
        return (
            f"cannot reach the Hugging Face Hub at {hub_endpoint()} ({type(error).__name__}: {error}); check the "
            "network and HF_ENDPOINT, or run offline with local folders"
        )
    if isinstance(error, (ValueError, OSError, ImportError)) or type(error).__name__ in _USER_RUNTIME_ERRORS:
        text = " ".join(str(error).split()) or type(error).__name__  # one line, whatever the library wrote
        if type(error).__module__.startswith("huggingface_hub"):
            text += f" (Hub endpoint {hub_endpoint()})"
        return text
    return None


def run_cli(
    main: Callable[..., Any],
    arguments_class: type | None = None,
    section: str | None = None,
    argv: list[str] | None = None,
    config_file: bool = True,
) -> Any:
    """Parse `argv` into `arguments_class` (with `config_file`: `--config` YAML `section`, then the command
    line), check the inputs, run `main(args)`; user errors end in one line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    _unshadow_libraries()
    try:
        if arguments_class is None:
            return main(argv)
        from .arguments import library_checks_deferred, parse_arguments

        with library_checks_deferred():  # the checks that need no torch first: a user error answers in a second
            args = parse_arguments(arguments_class, argv, section=section, config_file=config_file)
        check_inputs(args)
        if hasattr(args, "check_with_libraries"):
            args.check_with_libraries()
        return main(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as error:
        message = None if debug else user_error_message(error)
        if message is None:
            raise
        if is_main_process():
            print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_EXIT_CODE) from None


def _unshadow_libraries() -> None:
    """A script's folder comes first on sys.path; examples/evaluate.py would then shadow the `evaluate` library
    (used by the metrics, e.g. in periodic validation) for every script of examples/. Drop that folder."""
    folder = os.path.dirname(os.path.realpath(sys.argv[0])) if sys.argv and sys.argv[0] else ""
    if folder and os.path.isfile(os.path.join(folder, "evaluate.py")):  # realpath: Python resolves links for path[0]
        sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != folder]


# --------------------------------------------------------------------------------------------- input checks
def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.count("/") != 1 or Path(name).exists()


def check_model_source(name: str | None, field: str) -> None:
    """A model given as a folder must exist; a Hub id must be in the cache when offline (HF_HUB_OFFLINE=1)."""
    if not name:
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if _looks_like_path(name):
        if not Path(name).expanduser().is_dir():
            raise FileNotFoundError(f"config field '{field}': folder {name} does not exist")
        if not (Path(name).expanduser() / "config.json").is_file():
            raise FileNotFoundError(f"config field '{field}': folder {name} holds no config.json (not a saved model)")
        return
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise FileNotFoundError(
            f"config field '{field}': {name!r} is neither a local folder nor a Hub model in the "
            f"cache, and HF_HUB_OFFLINE=1; give a folder, or download it first (`hf download {name}`)"
        )


def check_timm_weights(vision_model_name: str) -> None:
    """Offline, a pretrained timm tower needs its weights in the cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return
    import timm

    try:
        hub_id = (timm.models.get_pretrained_cfg(vision_model_name) or None).hf_hub_id
    except (AttributeError, RuntimeError):
        hub_id = None
    cached = hub_id and any(
        isinstance(try_to_load_from_cache(hub_id, f), str)
        for f in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin")
    )
    if not cached:
        raise FileNotFoundError(
            f"config field 'model_config.vision_model_name': timm's pretrained weights of {vision_model_name!r} are "
            "not in the cache and HF_HUB_OFFLINE=1; download them first or set vision_pretrained: false"
        )


def check_hub_token(hub_model_id: str | None) -> str:
    """Before any training: a token exists and the Hub endpoint accepts it (push_to_hub)."""
    from huggingface_hub import HfApi, constants

    from .hub.credentials import check_repo_id, resolve_token

    check_repo_id(hub_model_id)
    if constants.HF_HUB_OFFLINE:
        raise ValueError("push_to_hub needs the Hub but HF_HUB_OFFLINE=1; unset it or drop --push_to_hub")
    token = resolve_token()
    HfApi(token=token).whoami()  # an invalid token or unreachable endpoint fails here, not after training
    return token


def check_inputs(args: Any) -> None:
    """Checks of an entry script's arguments that need no training: model folders / Hub ids, timm weights
    offline, the checkpoint to resume from, the Hub token."""
    if getattr(args, "model_name_or_path", None):
        check_model_source(args.model_name_or_path, "model_name_or_path")
    model_field = getattr(args, "model_field", None)
    if model_field is not None:
        check_model_source(model_field("text_model_name_or_path"), "model_config.text_model_name_or_path")
        if args.vision_pretrained:
            check_timm_weights(model_field("vision_model_name"))
    resume = getattr(args, "resume_from_checkpoint", None)
    if resume and resume != "latest" and not Path(resume).is_dir():
        raise FileNotFoundError(
            f"config field 'resume_from_checkpoint': folder {resume} does not exist (or use 'latest')"
        )
    if getattr(args, "push_to_hub", False):
        check_hub_token(args.hub_model_id)


__all__ = ["check_hub_token", "check_inputs", "check_model_source", "run_cli", "user_error_message"]
