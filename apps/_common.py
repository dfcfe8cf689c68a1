"""What every command shares: error handling, parameter parsing, output."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import sys

import click
import torch

import landscape
from landscape import LandscapeError


class UserError(click.ClickException):
    """One line on stderr and exit status 2, never a traceback."""

    exit_code = 2

    def show(self, file=None):
        click.echo(f"landscape: error: {self.format_message()}", err=True)


@contextlib.contextmanager
def user_errors():
    """Turn the library's user errors (and an out-of-memory GPU, an interrupt) into one line on stderr."""
    try:
        yield
    except LandscapeError as err:
        raise UserError(str(err)) from None
    except OSError as err:  # a folder where a file was expected, a file that cannot be read: the input, in one line
        where = f"{err.filename}: " if err.filename else ""
        raise UserError(f"{where}{err.strerror or err}; check the path") from None
    except UnicodeDecodeError as err:
        raise UserError(f"a text input is not UTF-8 ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except torch.cuda.OutOfMemoryError:
        raise UserError("out of GPU memory; use fewer points at once or --device cpu") from None
    except KeyboardInterrupt:
        click.echo("landscape: interrupted; finished files are kept, rerun to resume", err=True)
        sys.exit(130)


class _OneLine:
    """A bad option or argument is one line on stderr with exit status 2, not click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else (prog_name or "landscape")
            click.echo(f"landscape: error: {err.format_message()} (see {where} --help)", err=True)
            sys.exit(2)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("landscape: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # click returns the exit code of --help, --version, ctx.exit


class Group(_OneLine, click.Group):
    """The ``landscape`` command group, with :func:`user_errors` around every command."""

    def invoke(self, ctx):
        with user_errors():
            return super().invoke(ctx)


class Command(_OneLine, click.Command):
    """A stand-alone command (a study script) with the same error handling as :class:`Group`."""

    def invoke(self, ctx):
        with user_errors():
            return super().invoke(ctx)


def parse_params(items, flag: str = "--param") -> dict:
    """``("width=64", "activation=tanh")`` -> ``{"width": 64, "activation": "tanh"}``.

    Values are read as JSON; a bare word (``tanh``, ``cross_entropy``) is taken as a string. A value that
    looks like JSON but is not (``[3,``), or a number that is not finite, is an error naming ``flag``.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r} must look like key=value")
        try:
            parsed = json.loads(value)
        except RecursionError:
            raise UserError(f"{flag} {key}=...: the value is nested too deeply; flatten it") from None
        except json.JSONDecodeError:
            if not _BARE.fullmatch(value):
                raise UserError(f"{flag} {item!r}: {value!r} is neither JSON nor a plain word; quote a string "
                                f"as '\"...\"'") from None
            parsed = value
        if not _finite(parsed):
            raise UserError(f"{flag} {item!r}: numbers must be finite")
        out[key] = parsed
    return out


_BARE = re.compile(r"[A-Za-z_][\w.:/-]*")


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def parse_seeds(text: str) -> list[int]:
    """``"0..9"`` (inclusive), ``"0,3,7"`` or ``"5"``."""
    seeds = []
    try:
        for part in text.split(","):
            if ".." in part:
                a, b = part.split("..")
                if int(b) - int(a) >= MAX_SEEDS:  # refused before a huge range is built
                    raise UserError(f"--seeds {text!r}: at most {MAX_SEEDS:,} seeds (all train as one batch)")
                seeds.extend(range(int(a), int(b) + 1))
            elif part.strip():
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"--seeds {text!r}: use a range like 0..9 or a list like 0,3,7") from None
    if not seeds:
        raise UserError(f"--seeds {text!r} names no seed")
    if len(seeds) > MAX_SEEDS or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: at most {MAX_SEEDS:,} seeds, none negative (all train as one batch)")
    return seeds


#: Most seeds one command trains or reads at once (they are one [S, D] batch).
MAX_SEEDS = 10_000


class Real(click.ParamType):
    """A finite number, optionally bounded: NaN, ±inf and values out of range are refused in one line."""

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, *, min_open: bool = False,
                 max_open: bool = False):
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.min is not None and (x < self.min or (self.min_open and x == self.min)):
            self.fail(f"{x:g} is not {'>' if self.min_open else '>='} {self.min:g}", param, ctx)
        if self.max is not None and (x > self.max or (self.max_open and x == self.max)):
            self.fail(f"{x:g} is not {'<' if self.max_open else '<='} {self.max:g}", param, ctx)
        return x

    def __repr__(self) -> str:
        return f"Real({self.min}, {self.max})"


def count(low: int = 0, high: int = 10**9) -> click.IntRange:
    """A whole number in [low, high]: counts, sizes and steps all have a floor and a ceiling."""
    return click.IntRange(low, high)


#: Seeds of torch generators.
SEED = click.IntRange(0, 2**63 - 1)
#: Sub-intervals per segment of a dense check.
RESOLUTION = click.IntRange(1, 4096)
#: A positive rate (learning rates, factors).
POSITIVE = Real(0.0, min_open=True)
#: A level u or another loss value: any finite number.
FINITE = Real()


def problem_options(f):
    """``--width`` and ``--param key=value`` for building a problem."""
    f = click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
                     help="A problem parameter (repeatable), value read as JSON: -p depth=3 -p activation=tanh.")(f)
    f = click.option("--width", "-w", type=count(1, 10**6), default=None, help="Shortcut for -p width=W.")(f)
    return f


def split_problem(item: str) -> tuple[str, dict]:
    """``NAME``, ``NAME:k=v,...`` or a user problem ``package.module:factory[:k=v,...]`` as (name, parameters)."""
    name, _, kv = item.rpartition(":")
    parts = [p for p in kv.split(",") if p]
    if not name or not parts or not all("=" in p for p in parts):
        name, parts = item, []
    return name, parse_params(parts)


def build_problem(name: str, width, params) -> landscape.Problem:
    kwargs = parse_params(params)
    if width is not None:
        kwargs["width"] = width
    return landscape.make_problem(name, **kwargs)


def file_problem_option(f):
    """``--problem`` with ``--width``/``--param`` for reading checkpoint files, passed on as ``given``.

    ``given`` is None unless ``--problem`` is named: the problem of plain state_dicts, or the
    ``package.module:factory`` of files made with a user problem (a file never causes an import).
    """
    @functools.wraps(f)
    def wrapper(*args, problem_name, width, params, **kwargs):
        given = build_problem(problem_name, width, params) if problem_name else None
        return f(*args, given=given, **kwargs)

    wrapper = problem_options(wrapper)
    option = click.option("--problem", "problem_name", default=None,
                          help="The problem of plain state_dicts, or the package.module:factory of a user problem.")
    return option(wrapper)


def device_option(f):
    return click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda",
                        help="Where to compute; auto picks CUDA when present.")(f)


def memory_option(f):
    def parse(ctx, param, value):
        if value is None:
            return None
        with user_errors():
            return landscape.problems.parse_memory(value)

    return click.option("--memory", default=None, metavar="SIZE", callback=parse,
                        help="Memory budget for the points evaluated at once, e.g. 2GiB (default: half of the "
                             "device's free memory); K = budget / bytes a point, said in the output.")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(f)


def echo_json(obj) -> None:
    """Indented JSON on stdout, lists of numbers kept on one line (a permutation is one line, not 100)."""
    click.echo(json_text(obj))


def json_text(obj) -> str:
    """What :func:`echo_json` prints."""
    text = json.dumps(_finite_json(obj), indent=2, default=_default)
    return _NUMBERS.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def _finite_json(obj):
    """Non-finite numbers as the strings "inf", "-inf", "nan": JSON has no NaN or Infinity."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable(str(k)): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


_NUMBERS = re.compile(r"\[\s*((?:-?[\d.eE+-]+\s*,\s*)*-?[\d.eE+-]+)\s*\]")


def _default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return printable(str(o))


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a file name (surrogates) written as ``\\xff``: valid JSON."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def echo_raw_names() -> None:
    """Let stdout and stderr write a non-UTF-8 file name back as the bytes it was given (as ``ls`` does)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="surrogateescape")
            except (ValueError, OSError):
                pass


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def certificate_text(r: dict) -> str:
    """What backs a path's claim, in words, from its summary (see :func:`landscape.certify`)."""
    proof = r["info"].get("proof") or {}
    pieces = f"{proof.get('pieces', 0):,} pieces, {proof.get('seconds', 0.0):.2f} s"
    if r["certificate"] == "bound" and r["status"] == "connected":
        return f"bound: proven <= {r['bound']:.6g} on every point of the path ({pieces})"
    if r["certificate"] == "bound":
        return f"bound: loss {proof['witness']['loss']:.6g} found above the level inside a segment ({pieces})"
    if r["certificate"] == "grid" and r["status"] == "connected":
        note = "" if not proof else f"; no proof: {proof.get('reason')}" if proof["status"] == "unsupported" \
            else f"; proof undecided ({proof['reason']}; --proof-seconds allows more)" \
            if proof["status"] == "undecided" and proof.get("reason") else f"; proof {proof['status']} after {pieces}"
        return f"grid: dense check, largest gap between checked points {r['spacing']:.3g}{note}"
    if r["certificate"] == "grid":
        return f"grid: a checked point is above the level (loss {r['max_loss']:.6g})"
    if r["level"] is None:
        return "none (no level)"
    return "not recorded (a file written before certificates)"


def claim_text(r: dict) -> str | None:
    """What a path file claimed beside what reading it re-checked (:func:`landscape.load_path`); None for a
    path made here."""
    info = r["info"]
    if info.get("rechecked") is False:
        return "claimed by the file, not re-checked"
    claim = info.get("file_claim")
    if not isinstance(claim, dict):
        return None
    proof = claim["certificate"] == "bound" and claim["status"] == "connected" and claim["bound"] is not None
    said = claim["status"] + (f" with a proof (loss <= {claim['bound']:.6g} on every point)" if proof
                              else f" (certificate {claim['certificate']})" if claim["certificate"] else "")
    again = "the knot losses and the dense check, re-run on reading it"
    if claim["status"] == "unchecked":
        return f"no status; the one above is from {again}"
    if info.get("recheck", {}).get("agrees") is False:
        return f"the file claims {said}: not so by {again}"
    if proof:
        return f"the file claims {said}; the proof is claimed by the file, not re-checked; {again}, agree"
    return f"the file claims {said}; {again}, agree"


#: ``--quiet``: no progress line on stderr (commands that take a while show one by default).
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress line on stderr while it works.")


def capture_lines(c: dict) -> list[str]:
    """The differential check of a model's evaluation (:meth:`landscape.NetworkProblem.check_capture`), in words."""
    worst = [c[k] for k in ("loss", "grad", "bound") if isinstance(c.get(k), float)]
    by = {"bmm": "the hand-batched MLP", "attention": "the batched transformer",
          "wide": "the wide evaluator (K networks in one forward)"}.get(c["evaluator"], "functional_call")
    lines = [f"model       evaluated by {by}, "
             f"checked against its own forward at {c['points']} points in float64"
             + (f" (worst difference {max(worst):.2g} of the rounding tolerance)" if worst else "")
             + f", {c['seconds']:.2f} s"]
    return lines + [f"note        {note}" for note in c.get("notes", [])]


def memory_text(m: dict) -> str:
    """The budget, the bytes a point and the K chosen, on one line."""
    if m["budget"] is None:
        return f"free memory unknown: {m['point_bytes']:,} bytes a point, K not capped"
    return (f"budget {m['budget'] / 2**20:,.1f} MiB ({m['source']}), {m['point_bytes'] / 2**20:,.2f} MiB a point "
            f"({m['samples']:,} samples a call) -> K = {m['k']:,} points at once")
