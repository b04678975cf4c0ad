"""`napari-fracto`: the command line for batches, datasets, training and evaluation.

Sub-commands live in their own modules and register themselves here; heavy imports happen only once a
sub-command runs, so `napari-fracto --help` is instant.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from napari_fracto import __version__
from napari_fracto.errors import UserError
from napari_fracto.findings import AnalysisContext
from napari_fracto.inflight import in_flight_for
from napari_fracto.settings import BackendSettings, load_settings


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every sub-command that talks to a model; unset flags fall back to saved settings."""
    group = parser.add_argument_group("backend (defaults: the settings saved by the Analyze widget)")
    group.add_argument(
        "--backend",
        choices=["transformers", "openai", "vllm", "probe"],
        help="local model, a server, vLLM's offline engine (Linux + CUDA GPU), or the probe",
    )
    group.add_argument("--model", help="hub id or local directory (transformers); served model name (openai)")
    group.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    group.add_argument("--adapter", help="LoRA adapter directory (transformers) or served LoRA name (vLLM)")
    group.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    group.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"])
    group.add_argument("--max-image-tokens", type=int, help="image-token budget per image (32x32 px a token)")
    group.add_argument("--max-new-tokens", type=int, help="longest answer, in tokens")
    group.add_argument(
        "--batch-size",
        type=positive_int,
        help="local model: requests generated together (more fills a GPU; answers are the same)",
    )
    group.add_argument("--timeout", type=float, dest="timeout_s", help="seconds per request (openai)")
    group.add_argument("--api-key-env", help="environment variable holding the API key (never a flag)")
    group.add_argument("--trust-remote-code", action="store_true", default=None)
    group.add_argument(
        "--allow-remote", action="store_true", help="send images to a non-local server without asking"
    )


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (a clear usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_request_arguments(parser: argparse.ArgumentParser, *, overrides: bool = False) -> None:
    """What is asked of the model, the same flags for analyze, dataset autolabel and eval.

    They become the analysis request every result carries. With `overrides` (eval), only what changes how
    an image is shown (tiles, part, advice, display options) is offered, and a flag not given keeps what
    each stored request asked.
    """
    default = None if overrides else 1
    keep = " (default: as each review was asked)" if overrides else ""
    group = parser.add_argument_group("request (recorded whole in every result)")
    group.add_argument("--tiles", type=int, default=default, help="split each image into N x N tiles" + keep)
    group.add_argument(
        "--part",
        choices=["phase", "amplitude"],
        default=None if overrides else "phase",
        help="for complex data" + keep,
    )
    group.add_argument(
        "--advice", action="store_true", default=None, help="ptychography: also ask for reconstruction advice"
    )
    ptycho = parser.add_argument_group("ptychography display options (recorded in the request)")
    ptycho.add_argument("--remove-ramp", action="store_true", help="remove the linear phase ramp first")
    ptycho.add_argument("--unwrap", action="store_true", help="unwrap the phase first (thick objects)")
    ptycho.add_argument(
        "--crop-scanned",
        action="store_true",
        help="crop to the scanned region (needs scan positions in the file; boxes stay in file pixels)",
    )
    if overrides:  # evaluation re-asks each review with its own context and reconstruction settings
        return
    ptycho.add_argument(
        "--phase-scale",
        type=float,
        default=None,
        metavar="RAD_PER_VALUE",
        help="radians per stored value of an integer phase image (e.g. 2*pi/65536 = 9.5874e-05 for a 16-bit "
        "TIFF holding -pi..pi); without it integer images get no display options nor evidence",
    )
    ptycho.add_argument(
        "--recon-settings",
        metavar="TEXT|@FILE",
        default="",
        help="how the reconstruction was made (engine, iterations, probe modes, ...), given to the model "
        "for --advice; @path reads a text file",
    )
    ptycho.add_argument(
        "--no-evidence",
        dest="evidence",
        action="store_false",
        help="skip the quantitative evidence (grid peak, noise, ramp, contrast, residues) measured beside "
        "the model's verdict",
    )
    sample = parser.add_argument_group("sample context (goes in the prompt)")
    sample.add_argument("--material", default="")
    sample.add_argument("--sample-type", default="")
    sample.add_argument("--magnification", default="")
    sample.add_argument("--notes", default="")


def request_options(args: argparse.Namespace) -> dict[str, object]:
    """`analyze_array` keyword options from the request flags (context separately: `context_from_args`).

    Raises ValueError for an unreadable `--recon-settings @FILE`.
    """
    options: dict[str, object] = {
        "tiles": args.tiles if args.tiles is not None else 1,
        "advice": bool(args.advice),
        "display": _display_options(args),
        "evidence": None if args.evidence else False,
        "recon_settings": _read_text_argument(args.recon_settings, "--recon-settings"),
    }
    if getattr(args, "phase_scale", None) is not None:
        if not args.phase_scale > 0:
            raise ValueError(
                f"--phase-scale must be a positive number of radians per value, not {args.phase_scale}"
            )
        options["phase_scale"] = args.phase_scale
    return options


def context_from_args(args: argparse.Namespace) -> AnalysisContext:
    return AnalysisContext(args.material, args.sample_type, args.magnification, args.notes)


def settings_from_args(args: argparse.Namespace) -> BackendSettings:
    settings = load_settings()
    overrides = {
        "kind": args.backend,
        "model": args.model,
        "base_url": args.base_url,
        "adapter": args.adapter,
        "device": args.device,
        "dtype": args.dtype,
        "max_image_tokens": args.max_image_tokens,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": getattr(args, "batch_size", None),
        "timeout_s": args.timeout_s,
        "api_key_env": args.api_key_env,
        "trust_remote_code": args.trust_remote_code,
    }
    if args.backend == "openai" and args.model is None and settings.kind != "openai":
        overrides["model"] = ""  # the local default model id means nothing to a server
    data = settings.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    return BackendSettings.model_validate(data)


def adapter_from_args(args: argparse.Namespace) -> Any:
    """The settings with `--adapter NAME|DIR` resolved and the adapter's trained request settings applied.

    The adapter's image budget applies unless `--max-image-tokens` was given; its display options apply
    when no display flag was given (see `apply_adapter_display`). Raises RegistryError for an unknown name.
    """
    from napari_fracto.adapters import choose_adapter

    return choose_adapter(settings_from_args(args), keep_budget=args.max_image_tokens is not None)


def apply_adapter_display(args: argparse.Namespace, request_settings: dict[str, Any]) -> None:
    """Display options and part the adapter was trained with, where the user gave none on the command line."""
    display = request_settings.get("display")
    if display and not (args.remove_ramp or args.unwrap or args.crop_scanned):
        args.remove_ramp = bool(display.get("ramp"))
        args.unwrap = bool(display.get("unwrap"))
        args.crop_scanned = bool(display.get("crop"))


def confirm_remote(settings: BackendSettings, allow_remote: bool) -> bool:
    """Unpublished images leave the machine only when the user says so (a flag, or a yes at the prompt)."""
    if settings.kind != "openai":
        return True
    from napari_fracto.remote_hosts import CONSENT

    warning = CONSENT.warning(settings.base_url or None)
    if warning is None:
        return True
    if allow_remote:
        print(f"note: {warning}", file=sys.stderr)
    else:
        print(warning, file=sys.stderr)
        if not sys.stdin.isatty():
            print("Refusing without --allow-remote (no terminal to ask).", file=sys.stderr)
            return False
        if input("Send the images? [y/N] ").strip().lower() not in {"y", "yes"}:
            return False
    CONSENT.confirm(settings.base_url or None)
    return True


def _add_analyze_parser(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="analyse images and folders, write findings as JSONL/CSV")
    p.add_argument("paths", nargs="+", type=Path, help="image files and folders (searched recursively)")
    p.add_argument("--task", required=True, help="fracture or ptychography (or a user vocabulary)")
    p.add_argument("--out", type=Path, help="append one JSON record per image to this file")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the images --out already holds, asked the same way (same request and model)",
    )
    p.add_argument("--csv", type=Path, help="write one row per finding to this CSV file")
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=1,
        help="requests in flight (servers batch them; at least --batch-size for a local model)",
    )
    add_request_arguments(p)
    p.add_argument("--examples-from", type=Path, metavar="DATASET", help="corrections dataset for examples")
    p.add_argument("--shots", type=int, default=0, help="solved examples put in the prompt (in-context)")
    p.add_argument(
        "--select", choices=["similar", "random"], default="similar", help="how examples are chosen"
    )
    add_example_feature_arguments(p)
    p.add_argument(
        "--second-opinion",
        type=Path,
        metavar="CONFIG",
        help="TOML/JSON with a second configuration's backend settings (a comparison entry's keys), asked "
        "beside the first; both are recorded, with per-label agreement",
    )
    p.add_argument(
        "--samples", type=int, default=1, help="self-consistency: ask K times, agreement is the confidence"
    )
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of --samples (0.7)")
    add_backend_arguments(p)
    p.set_defaults(handler=_run_analyze)


@contextlib.contextmanager
def progress_bar(desc: str, unit: str = "file") -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (rate and time left), fed by the `(done, total)` callbacks of batches."""
    from tqdm import tqdm

    bar = tqdm(unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)  # through update(), so the bar's rate and time left follow the work

    try:
        yield update
    finally:
        bar.close()


def report_notice(message: str) -> None:
    """Something the user should know that is not a failure (a repaired results file), above the bar."""
    from tqdm import tqdm

    tqdm.write(f"note: {message}", file=sys.stderr)


def report_failure(source: str, message: str) -> None:
    """A skipped file, printed above the progress bar rather than through it."""
    from tqdm import tqdm

    tqdm.write(f"skipped {source}: {message}", file=sys.stderr)


def _run_analyze(args: argparse.Namespace) -> int:
    from napari_fracto.backends.factory import make_backend
    from napari_fracto.batch import run_batch
    from napari_fracto.vocabulary import load_vocabulary

    try:
        load_vocabulary(args.task)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    choice = adapter_from_args(args)
    settings = choice.settings
    apply_adapter_display(args, choice.request_settings)
    if settings.kind == "openai" and not settings.model:
        print(
            "error: --model is required with --backend openai (the name the server serves)", file=sys.stderr
        )
        return 2
    if not confirm_remote(settings, args.allow_remote):
        return 2
    if args.resume and args.out is None:
        print("error: --resume needs --out results.jsonl (the file to resume)", file=sys.stderr)
        return 2
    context = context_from_args(args)
    backend = make_backend(settings)  # cheap: a local model loads on first use
    try:
        options = request_options(args)
        examples = _example_chooser(args, context, settings.max_image_tokens, backend)
        if args.samples > 1:
            from napari_fracto.consistency import SelfConsistentBackend
            from napari_fracto.prepare import vocabularies
            from napari_fracto.request import AnalysisRequest

            vocab, advice = vocabularies(AnalysisRequest(task=args.task, advice=bool(args.advice)))
            backend = SelfConsistentBackend(
                backend, vocab, k=args.samples, temperature=args.temperature, advice_vocab=advice
            )
        if args.second_opinion:
            from napari_fracto.second_opinion import paired_backend

            backend = paired_backend(
                backend, args.second_opinion, lambda s: confirm_remote(s, args.allow_remote)
            )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown: list[Any] = []  # what is printed at the end (nothing kept when results go to a file)
    uncropped: list[str] = []

    def on_result(result: Any) -> None:
        if "not cropped" in result.preprocessing:
            uncropped.append(result.source)
        if args.out is None and args.csv is None:
            labels = ", ".join(result.labels) or "(nothing found)"
            second = result.evidence.get("second_opinion")
            if second:
                from napari_fracto.second_opinion import disagreements

                labels += f"\tsecond opinion disagrees on: {', '.join(disagreements(second)) or 'nothing'}"
            shown.append((result.source, labels))

    try:
        with progress_bar("analyse") as progress:
            summary = run_batch(
                args.paths,
                backend=backend,
                task=args.task,
                out_jsonl=args.out,
                out_csv=args.csv,
                concurrency=in_flight_for(settings, args.concurrency),
                context=context,
                part=args.part,
                on_progress=progress,
                on_failure=report_failure,
                on_notice=report_notice,
                on_result=on_result,
                resume=args.resume,
                keep_results=False,
                examples=examples or (),
                max_image_tokens=settings.max_image_tokens,
                max_new_tokens=settings.max_new_tokens,
                **options,
            )
    finally:
        backend.close()
        if examples is not None:
            examples.close()
    for source, labels in shown:
        print(f"{source}\t{labels}")
    if args.crop_scanned and uncropped:
        print(
            f"note: {len(uncropped)} image(s) not cropped, their files hold no scan positions or probe "
            f"(e.g. {uncropped[0]}); analysed whole",
            file=sys.stderr,
        )
    held = f", {summary.skipped} already in {args.out}" if args.resume else ""
    print(f"{summary.analysed} image(s) analysed{held}, {len(summary.failures)} failed.", file=sys.stderr)
    return 1 if summary.failures else 0


def _display_options(args: argparse.Namespace):
    """The ptychography display options the flags ask for; None (image as stored) when none is given."""
    if not (args.remove_ramp or args.unwrap or args.crop_scanned):
        return None
    from napari_fracto.ptycho.display import DisplayOptions

    return DisplayOptions(ramp=args.remove_ramp, unwrap=args.unwrap, crop=args.crop_scanned)


def _read_text_argument(value: str, flag: str) -> str:
    """`TEXT` as given, or the contents of `@FILE` (UTF-8)."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{flag} {value}: no such file {path}; give the text itself or @path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag} {value}: cannot read {path} as UTF-8 text ({exc})") from None


def add_example_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """`--example-features` and `--feature-model`: what "similar" example selection compares."""
    parser.add_argument(
        "--example-features",
        choices=["texture", "vision"],
        default="texture",
        help="image features for --select similar: texture (no weights) or the VLM's vision tower",
    )
    parser.add_argument(
        "--feature-model",
        default="",
        metavar="ID|DIR",
        help="Qwen3-VL model whose vision tower gives the vision features (default: the local --model)",
    )


def _example_chooser(args: argparse.Namespace, context: AnalysisContext, max_image_tokens: int, backend=None):
    """Per-image in-context examples from a corrections dataset's train split (`icl.example_chooser`),
    or None for no examples. Vision features use `--feature-model`, else the local analysis backend."""
    if args.shots > 0 and args.examples_from is None:
        raise ValueError("--shots needs --examples-from DATASET (a corrections dataset folder)")
    from napari_fracto.icl import example_chooser

    features = None
    if args.shots > 0 and args.select == "similar" and args.example_features == "vision":
        from napari_fracto.icl_vision import vision_features

        features = vision_features(backend=backend, model=args.feature_model)
    return example_chooser(
        args.examples_from,
        args.task,
        args.shots,
        args.select,
        context,
        advice=args.advice,
        max_image_tokens=max_image_tokens,
        features=features,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-fracto",
        description="Vision-language models for fractographs and ptychography reconstructions.",
    )
    parser.add_argument("--version", action="version", version=f"napari-fracto {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_analyze_parser(subparsers)
    for module_name in dict.fromkeys(EXTRA_COMMANDS):  # a module listed twice registers once
        module = __import__(module_name, fromlist=["add_parser"])
        module.add_parser(subparsers)
    return parser


# Sub-command modules with an `add_parser(subparsers)` that sets `handler`; imported cheaply (argparse only).
EXTRA_COMMANDS: list[str] = [
    "napari_fracto.dataset.cli",
    "napari_fracto.evaluation.cli",
    "napari_fracto.training.cli",
    "napari_fracto.report.cli",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2

    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as exc:  # something the user can fix: one clear line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
