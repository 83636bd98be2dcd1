"""Issue 10: property-based tests of the command line (hypothesis).

The CLI is driven in-process with random values for every option (sensible ones, with hostile
ones mixed in), with random and damaged input files and with the environment variables that set
the size guards. Whatever comes in, these hold:

* no traceback, and no "internal error" (what ``GuardedGroup`` turns an unexpected exception into);
* the exit code is 0, 1 or 2, and a value that is plainly invalid (``--outscale nan``, ``--tile 15``,
  an unknown model, ``-o x.gif``...) is a usage error: exit 2;
* with exit 2 nothing at all is created;
* every file that existed before is byte-identical afterwards (only ``--overwrite`` may replace one,
  and then with a complete image);
* every new file is a complete, readable image: no ``*.part`` and no hidden files are left behind;
* with ``--json`` stdout is one JSON object per line, and each ``ok`` record names an output that exists.

``pixelift models show ID`` and ``pixelift export`` (bad ``--id`` / ``--sha256`` values, ids of models
that do not exist, missing or garbage weight files: never a real export) must also leave no trace,
neither beside the command nor in ``PIXELIFT_HOME``.

Each example builds its files in a fresh temporary folder and runs with that folder's ``work``
sub-folder as the current directory, so relative paths such as ``../x.png`` stay inside it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.numpy import save_file

from pixelift import models
from pixelift.cli import main
from pixelift.export import to_onnx
from pixelift.runtime import imageio
from pixelift.samples import sample_photo

MODEL = "span-x2-ch48"

SETTINGS = {
    "deadline": None,
    "derandomize": True,  # the same examples on every run: CI is reproducible
    "database": None,  # no replay store: a failure is printed as an example to paste into @example
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
}

WRITE_SUFFIXES = {s for s, f in imageio.SUFFIXES.items() if f in imageio.WRITE_FORMATS}
ENV_PIXELS = ("PIXELIFT_MAX_PIXELS", "PIXELIFT_MAX_OUTPUT_PIXELS")
# unset unless a case sets them; PIXELIFT_DEBUG unset: an unexpected exception shows as "internal error"
BASE_ENV: dict[str, str | None] = {"PIXELIFT_DEBUG": None, **dict.fromkeys(ENV_PIXELS)}


@pytest.fixture(scope="module", autouse=True)
def _exported() -> None:
    to_onnx(MODEL)


# --- files ------------------------------------------------------------------------------------------------

# kind -> suffix of the well-formed files
GOOD = {
    "png": ".png",
    "jpg": ".jpg",
    "jpeg": ".jpeg",
    "tif": ".tif",
    "tiff": ".tiff",
    "webp": ".webp",
    "bmp": ".bmp",
    "png16": ".png",  # 16-bit RGB
    "gray16": ".png",  # 16-bit gray
    "rgba": ".png",
    "gray": ".png",
    "tif16": ".tif",
    "rgba_tif": ".tif",
    "float_tif": ".tif",  # float32 0..1
    "hdr_tif": ".tif",  # float32 up to 4 (clipped, with a note)
    "nan_tif": ".tiff",  # float32 holding NaN and inf (refused)
    "palette": ".png",
    "bilevel": ".png",  # mode "1"
    "la": ".png",  # gray + alpha
    "cmyk_jpg": ".jpg",
    "exif_rot": ".jpg",  # EXIF orientation 6
    "big_truncated": ".png",  # a 1000x1000 header, half the data
}
# damaged kinds take a drawn image suffix (text: .txt)
DAMAGED = ("truncated", "random", "empty", "png_garbage", "dir", "text", "text_png")
DAMAGED_SUFFIXES = (".png", ".jpg", ".tif", ".webp", ".bmp", ".PNG", ".jpeg")
STEMS = ("a", "b", "photo", "ünïcødé", "sp ace", "x.y", "a_pixelift")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class FileSpec:
    kind: str
    stem: str
    suffix: str
    sub: bool  # in work/sub/ (reached by --recursive from ".")
    h: int
    w: int
    top: int
    left: int
    junk: bytes = b""

    @property
    def rel(self) -> str:
        return f"sub/{self.stem}{self.suffix}" if self.sub else f"{self.stem}{self.suffix}"


def _pixels(spec: FileSpec) -> np.ndarray:
    return sample_photo()[spec.top : spec.top + spec.h, spec.left : spec.left + spec.w].copy()


def _alpha(h: int, w: int) -> np.ndarray:
    return np.linspace(0, 255, h * w).reshape(h, w).astype(np.uint8)


def _write(spec: FileSpec, path: Path) -> None:
    img = _pixels(spec)
    k = spec.kind
    if k in ("png", "jpg", "jpeg", "tif", "tiff", "webp", "bmp"):
        Image.fromarray(img).save(path)
    elif k == "png16":
        path.write_bytes(imagecodecs.png_encode(img.astype(np.uint16) * 257))
    elif k == "gray16":
        Image.fromarray(img[:, :, 1].astype(np.uint16) * 257).save(path)
    elif k == "rgba":
        Image.fromarray(np.dstack([img, _alpha(spec.h, spec.w)]), "RGBA").save(path)
    elif k == "gray":
        Image.fromarray(img).convert("L").save(path)
    elif k == "tif16":
        tifffile.imwrite(path, img.astype(np.uint16) * 257, photometric="rgb")
    elif k == "rgba_tif":
        tifffile.imwrite(
            path, np.dstack([img, _alpha(spec.h, spec.w)]), photometric="rgb", extrasamples=("unassalpha",)
        )
    elif k in ("float_tif", "hdr_tif", "nan_tif"):
        f = img.astype(np.float32) / 255
        if k == "hdr_tif":
            f *= 4
        if k == "nan_tif":
            f[0, 0, :] = np.nan
            f[-1, -1, 1] = np.inf
        tifffile.imwrite(path, f, photometric="rgb")
    elif k == "palette":
        Image.fromarray(img).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    elif k == "bilevel":
        Image.fromarray(img).convert("1").save(path)
    elif k == "la":
        Image.fromarray(np.dstack([img[:, :, 0], _alpha(spec.h, spec.w)]), "LA").save(path)
    elif k == "cmyk_jpg":
        Image.fromarray(img).convert("CMYK").save(path)
    elif k == "exif_rot":
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(img).save(path, exif=exif)
    elif k == "big_truncated":
        buf = io.BytesIO()
        Image.new("RGB", (1000, 1000), (90, 120, 200)).save(buf, "PNG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif k == "truncated":
        fmt = imageio.format_for_path(path) or "PNG"
        whole = Path(str(path) + ".whole")
        Image.fromarray(img).save(whole, format=fmt)
        data = whole.read_bytes()
        whole.unlink()
        path.write_bytes(data[: max(1, len(data) // 2)])
    elif k == "random":
        path.write_bytes(spec.junk)
    elif k == "empty":
        path.write_bytes(b"")
    elif k == "png_garbage":
        path.write_bytes(PNG_SIGNATURE + spec.junk)
    elif k == "dir":  # a folder named like an image, holding a real one
        path.mkdir()
        Image.fromarray(img).save(path / "inner.png")
    elif k in ("text", "text_png"):
        path.write_text("not an image\n", encoding="utf-8")
    else:  # pragma: no cover
        raise AssertionError(k)


@st.composite
def file_specs(draw: st.DrawFn) -> FileSpec:
    kind = draw(st.sampled_from([*GOOD, *DAMAGED]))
    if kind in GOOD:
        suffix = GOOD[kind]
    elif kind == "text":
        suffix = ".txt"
    else:
        suffix = draw(st.sampled_from(DAMAGED_SUFFIXES))
    junk = draw(st.binary(min_size=0, max_size=64)) if kind in ("random", "png_garbage") else b""
    return FileSpec(
        kind=kind,
        stem=draw(st.sampled_from(STEMS)),
        suffix=suffix,
        sub=draw(st.sampled_from([False, False, True])),
        h=draw(st.integers(8, 40)),
        w=draw(st.integers(8, 40)),
        top=draw(st.integers(0, 280)),
        left=draw(st.integers(0, 280)),
        junk=junk,
    )


# --- option values ------------------------------------------------------------------------------------------
# option -> (valid, invalid, odd). "invalid" values must give exit 2; "odd" ones are legal but unusual
# (unicode digits, huge tiles, unavailable providers, limits that refuse the inputs...): any of 0, 1, 2.

LONG = "x" * 300 + ".png"  # longer than a file name may be (ENAMETOOLONG)
FOLDER_INPUTS = [".", "sub", ""]  # "" is the current folder
ODD_INPUTS = ["missing.png", "-", "nul\x00.png", "loop.png", "dangling.png", LONG]  # none can be read
HOSTILE_NUMBERS = ["-1", "nan", "inf", "-inf", "1e400", "abc", "", "1.5x", "0x10", "½", "../x", "a/b"]
OPTIONS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "--outscale": (
        ["1", "2", "0.5", "1.5", "3"],
        ["0", "-1", "nan", "inf", "-inf", "1e12", "abc", "", "1e-9", "65", "½", "../x"],
        ["64", "0.01", "٢", "1_0", " 2 ", "0.26"],
    ),
    "--format": (
        ["png", "tiff", "jpeg", "webp", "PNG", "Jpeg"],
        ["gif", "", "jpg", "bmp", "tif", "png/", "ｐｎｇ"],
        [],
    ),
    "--quality": (
        ["1", "50", "95", "100"],
        ["0", "101", "-5", "abc", "", "nan", "1e3", "9" * 30],
        [" 80", "+90", "٥٠"],
    ),
    "--provider": (
        ["auto", "cpu", "openvino", "openvino:CPU", "CPU", "Auto"],
        ["gpu", "", "cpu:0", "openvino:XPU", "../cpu", "ｃｐｕ"],
        ["cuda", "tensorrt", "coreml", "coreml-native", "openvino:GPU", "openvino:NPU"],
    ),
    "--precision": (["auto", "fp32"], ["fp8", "", "FP32", "int4", "auto "], ["fp16", "int8", "bf16"]),
    "--tile": (
        ["auto", "none", "16", "32", "64", "128"],
        ["15", "0", "-16", "abc", "", "1e3", "16.0", "NONE", "nan", "../x"],
        [" 32", "99999999999999999999", "٣٢", "+64", "1_6", "17"],
    ),
    "--overlap": (["0", "4", "8", "16"], ["-1", "257", "x", "", "1.5", "nan"], ["256", "255", "31"]),
    "--blend": (["linear", "cosine", "gaussian", "crop"], ["", "LINEAR", "box", "linear "], []),
    "--batch": (["1", "2", "4"], ["0", "65", "-1", "two", "", "1e1"], ["64"]),
    "--max-pixels": (
        ["none", "0", "1e8", "200_000_000", "200000000", "100000"],
        ["-5", "-0", *HOSTILE_NUMBERS],
        ["100", "1", "off", "unlimited", " NONE ", "2e2"],
    ),
    "--max-output-pixels": (
        ["none", "1e9", "500000000", "0"],
        ["-5", "-0", *HOSTILE_NUMBERS],
        ["100", "1", "1000000", "unlimited"],
    ),
    "-m": (
        [MODEL],
        ["", "no-such-model", "../x", f"{MODEL}/..", "ѕpan-x2-ch48", MODEL.upper(), "/", "a" * 65],
        [],
    ),
}
# -o: valid names, names that must be refused, and legal oddities ("$input" is the first input argument)
OUTPUTS = (
    [
        *("outdir", "newdir/", "nested/deeper/", "outdir/x.png", "../up.png", "ö/ü.png"),
        *("out.png", "out.jpg", "out.tif", "out.webp", "out.tiff", "out.JPEG"),
    ],
    ["out.gif", "out.bmp", "out.txt", "newdir/out.heic"],
    [
        "$input",
        "",
        "prev.png",
        "out",
        "out.",
        ".",
        "sub",
        "../",
        "a\x00b.png",
        "deep/er/out.png",
        "loop.png",
        "dangling.png",
        LONG,
        f"{LONG}/",
    ],
)
ENV = (["1e8", "none", "0", "200000000"], ["-5", "abc", "nan", "1.5", "inf", "½"], ["100", " ", "", "1e9"])
FLAGS = ("--recursive", "--overwrite", "--skip-existing", "--strict", "--fast", "-v", "-q", "--json")
# hostile trailing arguments: unknown option, option without its value
TAILS = (["--bogus"], ["--quality"], ["-o"], ["--tile"])
HOSTILE_KEYS = (*OPTIONS, "-o", *ENV_PIXELS, "tail")


@dataclass
class EnhanceCase:
    files: list[FileSpec]
    prev_output: str | None  # a pre-existing image where an output may go
    inputs: list[str]
    args: list[str]  # full argv, the inputs last
    env: dict[str, str | None]
    invalid: list[str] = field(default_factory=list)  # what makes this a usage error


@st.composite
def enhance_cases(draw: st.DrawFn) -> EnhanceCase:
    files: list[FileSpec] = []
    taken: set[str] = set()
    for spec in draw(st.lists(file_specs(), min_size=1, max_size=3)):
        if spec.rel.lower() not in taken and not any(spec.rel.startswith(f"{t}/") for t in taken):
            files.append(spec)
            taken.add(spec.rel.lower())
    rels = [f.rel for f in files]
    inputs = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        group = draw(st.sampled_from(["file"] * 8 + ["folder", "odd"]))
        inputs.append(draw(st.sampled_from({"file": rels, "folder": FOLDER_INPUTS, "odd": ODD_INPUTS}[group])))
    prev_output = draw(st.sampled_from([None, None, "good", "junk"]))

    hostile = set(draw(st.lists(st.sampled_from(HOSTILE_KEYS), max_size=2, unique=True)))
    if draw(st.booleans()):
        hostile = set()  # about half of the examples have only sensible values (the model runs)
    invalid: list[str] = []
    opts: list[str] = []

    def pick(key: str, valid: list[str], bad: list[str], odd: list[str]) -> str | None:
        if key in hostile:
            value = draw(st.sampled_from([*bad, *odd]))
            if value in bad:
                invalid.append(f"{key}={value!r}")
            return value
        if draw(st.sampled_from([False, False, True])):
            return draw(st.sampled_from(valid))
        return None

    for key, (valid, bad, odd) in OPTIONS.items():
        value = pick(key, valid, bad, odd)
        if value is not None:
            opts += [key, value]
    if "-m" not in hostile and draw(st.sampled_from([False, False, False, True])):
        opts += ["-m", MODEL, "-m", MODEL]  # a chain: x4
    output = pick("-o", *OUTPUTS)
    if output is not None:
        opts += ["-o", inputs[0] if output == "$input" else output]
    env = dict(BASE_ENV)
    for name, option in zip(ENV_PIXELS, ("--max-pixels", "--max-output-pixels"), strict=True):
        value = pick(name, *ENV)
        env[name] = value
        if option in opts and f"{name}={value!r}" in invalid:
            invalid.remove(f"{name}={value!r}")  # an option given on the command line wins over the variable
    opts += draw(st.lists(st.sampled_from(FLAGS), max_size=4, unique=True))
    group = draw(st.sampled_from([[], [], ["-v"], ["-vv"]]))
    tail: list[str] = []
    if "tail" in hostile:
        tail = draw(st.sampled_from(TAILS))
        invalid.append(f"tail={tail}")
    return EnhanceCase(
        files=files,
        prev_output=prev_output,
        inputs=inputs,
        args=[*group, "enhance", *opts, *inputs, *tail],
        env=env,
        invalid=invalid,
    )


# --- checks -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every path under ``root``: file bytes, ``"-> target"`` for a symlink, or None for a folder."""
    out: dict[str, bytes | str | None] = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = f"-> {os.readlink(p)}"
        else:
            out[rel] = None if p.is_dir() else p.read_bytes()
    return out


def _home_snapshot(home: Path) -> dict[str, tuple[bool, int, int]]:
    out = {}
    for p in home.rglob("*"):
        st_ = p.stat()
        out[p.relative_to(home).as_posix()] = (p.is_dir(), st_.st_size, st_.st_mtime_ns)
    return out


def _readable_image(path: Path) -> None:
    """A complete image: Pillow decodes every pixel, or (TIFFs Pillow does not read) tifffile does."""
    try:
        with Image.open(path) as im:
            im.load()
            assert im.width > 0 and im.height > 0
        return
    except Exception as pil_error:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise AssertionError(f"{path.name}: not a readable image ({pil_error})") from pil_error
    arr = tifffile.imread(path)
    assert arr.size > 0, path


def _check_no_crash(res: Result, what: str) -> None:
    exc = res.exception
    assert exc is None or isinstance(exc, SystemExit), f"{what}: {exc!r}\n{res.output}"
    assert res.exit_code in (0, 1, 2), f"{what}: exit {res.exit_code}\n{res.output}"
    text = res.output + res.stderr
    assert "Traceback" not in text, f"{what}:\n{text}"
    assert "internal error" not in text, f"{what}:\n{text}"


def _materialise(case: EnhanceCase, work: Path) -> None:
    (work / "sub").mkdir(parents=True)
    (work / "outdir").mkdir()
    Image.fromarray(sample_photo()[:12, :12]).save(work / "prev.png")
    (work / "loop.png").symlink_to("loop.png")  # a symlink loop
    (work / "dangling.png").symlink_to("nothing-here.png")
    for spec in case.files:
        path = work / spec.rel
        if not path.exists():
            _write(spec, path)
    if case.prev_output is not None:
        first = next((f for f in case.files if f.kind in GOOD), None)
        if first is not None:
            prev = (work / first.rel).with_name(f"{first.stem}_pixelift.png")
            if not prev.exists():
                if case.prev_output == "good":
                    Image.fromarray(sample_photo()[:10, :14]).save(prev)
                else:
                    prev.write_bytes(b"old output, not an image")


def _unreadable(case: EnhanceCase) -> set[str]:
    """Input arguments that can only fail (a folder named x.png holds a real image: not one of them)."""
    bad = {
        f.rel for f in case.files if (f.kind in DAMAGED and f.kind != "dir") or f.kind in ("nan_tif", "big_truncated")
    }
    return bad | set(ODD_INPUTS)


def _check_enhance(case: EnhanceCase, res: Result, root: Path, before: dict[str, bytes | str | None]) -> None:
    work = root / "work"
    what = f"pixelift {' '.join(repr(a) for a in case.args)} env={case.env}"
    _check_no_crash(res, what)
    after = _snapshot(root)
    failing = [i for i in case.inputs if i in _unreadable(case)]
    if failing and "--skip-existing" not in case.args:
        assert res.exit_code != 0, f"{what}: {failing} cannot be read, yet exit 0\n{res.output}"
    if case.invalid:
        assert res.exit_code == 2, f"{what}: {case.invalid} accepted (exit {res.exit_code})\n{res.output}"
    if res.exit_code == 2:
        assert after == before, f"{what}: a usage error changed files: {sorted(set(after) ^ set(before))}"
    for rel, content in before.items():
        assert rel in after, f"{what}: {rel} was removed"
        if content is None:
            assert after[rel] is None, f"{what}: folder {rel} was replaced by a file"
        elif after[rel] != content:
            # only --overwrite may replace an existing file (or link), and only with a complete image
            assert "--overwrite" in case.args, f"{what}: {rel} was changed"
            assert Path(rel).suffix.lower() in WRITE_SUFFIXES, f"{what}: {rel} was overwritten"
            _readable_image(root / rel)
    for rel in sorted(set(after) - set(before)):
        path = root / rel
        if after[rel] is None:
            continue  # an output folder (-o newdir/)
        assert not isinstance(after[rel], str), f"{what}: created a symlink {rel}"
        assert not path.name.startswith("."), f"{what}: hidden file left behind: {rel}"
        assert not rel.endswith(".part"), f"{what}: partial file left behind: {rel}"
        assert path.suffix.lower() in WRITE_SUFFIXES, f"{what}: unexpected file {rel}"
        _readable_image(path)
    if "--json" in case.args and res.exit_code in (0, 1):
        records = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
        for rec in records:
            assert rec["status"] in ("ok", "skipped", "error"), rec
            if rec["status"] == "ok":
                assert (work / rec["output"]).is_file(), f"{what}: {rec}"
            if res.exit_code == 0:
                assert rec["status"] != "error", f"{what}: exit 0 with {rec}"


# --- enhance ----------------------------------------------------------------------------------------------


PNG_A = FileSpec("png", "a", ".png", sub=False, h=24, w=32, top=96, left=80)
RGBA_B = FileSpec("rgba", "b", ".png", sub=False, h=17, w=9, top=10, left=200)
JPG_A = FileSpec("jpg", "a", ".jpg", sub=True, h=8, w=40, top=0, left=0)
BROKEN = [
    FileSpec("truncated", "t", ".png", sub=False, h=30, w=30, top=50, left=50),
    FileSpec("truncated", "t", ".jpg", sub=True, h=30, w=30, top=50, left=50),
    FileSpec("random", "r", ".webp", sub=False, h=8, w=8, top=0, left=0, junk=b"RIFF\x00\x00\x00\x00WEBPVP8 "),
    FileSpec("empty", "e", ".tif", sub=False, h=8, w=8, top=0, left=0),
    FileSpec("png_garbage", "g", ".png", sub=False, h=8, w=8, top=0, left=0, junk=b"\x00\x00\x00\rIHDR" + b"\xff" * 20),
    FileSpec("dir", "d", ".png", sub=False, h=12, w=12, top=0, left=0),
    FileSpec("text_png", "txt", ".png", sub=True, h=8, w=8, top=0, left=0),
]


def _case(
    opts: list[str],
    inputs: list[str] | None = None,
    files: list[FileSpec] | None = None,
    env: dict[str, str | None] | None = None,
    invalid: list[str] | None = None,
) -> EnhanceCase:
    inputs = ["a.png"] if inputs is None else inputs
    return EnhanceCase(
        files=[PNG_A] if files is None else files,
        prev_output=None,
        inputs=inputs,
        args=["enhance", *opts, *inputs],
        env={**BASE_ENV, **(env or {})},
        invalid=invalid or [],
    )


@settings(max_examples=100, **SETTINGS)
@given(case=enhance_cases())
# the cases worth running every time, whatever hypothesis draws
@example(case=_case(["-o", "a.png", "--overwrite"]))  # the input replaced by its own (complete) output
@example(case=_case(["-o", "", "--overwrite"]))  # "" is the current folder
@example(case=_case(["-o", "."], inputs=["."], files=[PNG_A, JPG_A]))  # output folder = input folder
@example(case=_case(["--recursive", "--json"], inputs=["."], files=[PNG_A, RGBA_B, *BROKEN]))
@example(case=_case(["--format", "jpeg"], inputs=["b.png"], files=[RGBA_B]))  # alpha cannot go to JPEG
@example(case=_case(["-o", "newdir/"], inputs=["a.png", "sub/a.jpg"], files=[PNG_A, JPG_A]))  # name clash
@example(case=_case(["--outscale", "0.01"]))  # a 0x0 output
@example(case=_case(["--tile", "16", "--overlap", "8", "--batch", "3", "--blend", "crop", "-o", "t.tif"]))
@example(case=_case(["-o", "out.gif"], invalid=["-o out.gif"]))
@example(case=_case([], env={"PIXELIFT_MAX_PIXELS": "nan"}, invalid=["PIXELIFT_MAX_PIXELS=nan"]))
@example(case=_case([], env={"PIXELIFT_MAX_OUTPUT_PIXELS": "100"}))  # exit 1, nothing written
@example(case=_case(["-o", "a\x00b.png"]))  # a NUL in the output path
@example(case=_case([], inputs=["nul\x00.png"]))  # a NUL in an input path
@example(case=_case(["-o", LONG]))  # a file name too long for the file system
@example(case=_case([], inputs=["a.png", LONG]))
@example(case=_case(["-o", "loop.png", "--overwrite"]))  # the output is a symlink loop
@example(case=_case(["-o", "dangling.png", "--overwrite"]))  # ... or a dangling symlink
def test_enhance_survives_random_options_and_files(case: EnhanceCase) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "work"
        _materialise(case, work)
        before = _snapshot(root)
        with _in_dir(work):
            res = CliRunner(env=case.env).invoke(main, case.args)
        _check_enhance(case, res, root, before)


# --- models show ------------------------------------------------------------------------------------------

ID_ALPHABET = "abcz019-_./\\ ÄѕＡ\t:"
BAD_IDS = ["", "..", ".hidden", "../x", "../../x", "/abs/x", "a/b", "a\\b", "C:\\x", "Upper", "сon", "ｍodel"]
BAD_IDS += ["con", "nul.txt", "com1", "a" * 65, "x.", "a b", "x\x00y", "-x", "--json", f"{MODEL}/../{MODEL}"]
MISSING_IDS = ["no-such-model", "span-x2-ch49", "realesrgan-x9plus", "my-model"]


@settings(max_examples=30, **SETTINGS)
@given(
    model_id=st.one_of(
        st.sampled_from([MODEL, *sorted(models.REGISTRY.ids())[:3], *BAD_IDS, *MISSING_IDS]),
        st.text(alphabet=ID_ALPHABET, max_size=12),
    ),
    as_json=st.booleans(),
    verbose=st.sampled_from([[], ["-v"]]),
)
@example(model_id=MODEL, as_json=True, verbose=[])
@example(model_id=MODEL, as_json=False, verbose=["-v"])
@example(model_id="../x", as_json=False, verbose=[])
@example(model_id="x\x00y", as_json=True, verbose=[])
@example(model_id="", as_json=False, verbose=[])
def test_models_show_any_id(pixelift_home: Path, model_id: str, as_json: bool, verbose: list[str]) -> None:
    args = [*verbose, "models", "show", model_id, *(["--json"] if as_json else [])]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home_before = _home_snapshot(pixelift_home)
        with _in_dir(root):
            res = CliRunner(env=BASE_ENV).invoke(main, args)
        _check_no_crash(res, f"pixelift {args}")
        known = model_id in models.REGISTRY or any(s.id == model_id for s in models.user_specs())
        assert res.exit_code == (0 if known else 2), f"{args}: exit {res.exit_code}\n{res.output}"
        if known and as_json:
            assert json.loads(res.stdout)["id"] == model_id
        assert list(root.iterdir()) == [], f"{args} created files"
        assert _home_snapshot(pixelift_home) == home_before, f"{args} changed PIXELIFT_HOME"


# --- export -------------------------------------------------------------------------------------------------

HEX = "0123456789abcdefABCDEF"
BAD_SHAS = ["", "abc", "0" * 63, "0" * 65, "g" * 64, "٠" * 64, " " + "a" * 63, "a" * 63 + "\n", "../" + "a" * 61]
EXPORT_TARGETS = [
    *MISSING_IDS,
    "",
    "..",
    "../x",
    "/",
    "a b",
    "ѕpan-x2-ch48",
    "missing.pth",
    "gone.safetensors",
    "junk.pth",
    "notes.safetensors",
    "empty.pth",
    "dir.pth",
    "$file-url",
    "http://127.0.0.1:9/m.pth",
    "nul\x00.pth",
    "tiny.safetensors",
]


@dataclass
class ExportCase:
    targets: list[str]
    model_id: str | None
    sha256: str | None
    extra: list[str]

    def argv(self, root: Path) -> list[str]:
        url = (root / "missing.pth").as_uri()
        targets = [url if t == "$file-url" else t for t in self.targets]
        args = ["export", *targets, *self.extra]
        if self.model_id is not None:
            args += ["--id", self.model_id]
        if self.sha256 is not None:
            args += ["--sha256", self.sha256]
        return args

    @property
    def usage_error(self) -> str | None:
        """Why this must be refused with exit 2 before anything runs, if it must."""
        if self.model_id is not None and len(self.targets) != 1:
            return "--id with several targets"
        if self.model_id is not None and (self.model_id in BAD_IDS or not self.model_id):
            return "invalid --id"
        if self.sha256 is not None and self.sha256 in BAD_SHAS:
            return "invalid --sha256"
        precision = self.extra[self.extra.index("--precision") + 1] if "--precision" in self.extra else "fp32"
        if precision not in ("fp32", "int8", "all"):
            return "invalid --precision"
        if "--calibration" in self.extra and self.extra[self.extra.index("--calibration") + 1] == "no-such-folder":
            return "missing --calibration folder"
        return None


@st.composite
def export_cases(draw: st.DrawFn) -> ExportCase:
    n = draw(st.sampled_from([1, 1, 1, 2]))
    targets = draw(st.lists(st.sampled_from(EXPORT_TARGETS), min_size=n, max_size=n))
    model_id = draw(st.sampled_from([None, None, "my-model", "x", "m.v2_b-c", *BAD_IDS]))
    sha256 = draw(
        st.one_of(st.none(), st.sampled_from(BAD_SHAS), st.text(alphabet=HEX, min_size=64, max_size=64), st.none())
    )
    if any(t.startswith("http") for t in targets) and sha256 is not None and sha256 not in BAD_SHAS:
        sha256 = None  # never a network request: a URL goes with no or a bad checksum (both refused)
    extra: list[str] = []
    flags = ["--force", "--json", "--precision", "--calibration"]
    for flag in draw(st.lists(st.sampled_from(flags), max_size=2, unique=True)):
        if flag == "--precision":
            extra += [flag, draw(st.sampled_from(["fp32", "int8", "all", "fp32", "fp8", "", "FP16"]))]
        elif flag == "--calibration":
            extra += [flag, draw(st.sampled_from([".", ".", "no-such-folder"]))]
        else:
            extra.append(flag)
    return ExportCase(targets, model_id, sha256, extra)


@settings(max_examples=30, **SETTINGS)
@given(case=export_cases())
@example(case=ExportCase(["junk.pth"], "my-model", "ab" * 32, []))  # a pickle that is no weights: exit 1
@example(case=ExportCase(["tiny.safetensors"], "my-model", None, ["--json"]))  # no known architecture: exit 1
@example(case=ExportCase(["no-such-model"], None, None, ["--json"]))
@example(case=ExportCase(["$file-url"], None, "0" * 64, []))  # a file:// URL to nothing
@example(case=ExportCase(["junk.pth"], "x\x00y", None, []))
@example(case=ExportCase(["junk.pth"], "../x", None, []))
@example(case=ExportCase(["junk.pth"], "con", None, []))
@example(case=ExportCase(["junk.pth", "missing.pth"], "my-model", None, []))  # --id with two targets
@example(case=ExportCase(["junk.pth"], None, "g" * 64, []))
@example(case=ExportCase(["junk.pth"], None, "0" * 63, []))
@example(case=ExportCase(["http://127.0.0.1:9/m.pth"], None, None, []))  # a URL needs --sha256
def test_export_refuses_bad_ids_and_checksums_without_side_effects(pixelift_home: Path, case: ExportCase) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "junk.pth").write_bytes(b"\x80\x02garbage, not a pickle" * 3)
        (root / "notes.safetensors").write_text("not weights\n", encoding="utf-8")
        (root / "empty.pth").write_bytes(b"")
        (root / "dir.pth").mkdir()
        save_file({"not.a.known.layer": np.zeros((3, 2), np.float32)}, str(root / "tiny.safetensors"))
        args = case.argv(root)
        before = _snapshot(root)
        home_before = _home_snapshot(pixelift_home)
        user_before = sorted(s.id for s in models.user_specs())
        with _in_dir(root):
            res = CliRunner(env=BASE_ENV).invoke(main, args)
        what = f"pixelift {args}"
        _check_no_crash(res, what)
        # nothing here can be exported: exit 2 (refused) or 1 (tried and failed)
        assert res.exit_code in (1, 2), f"{what}: exit {res.exit_code}\n{res.output}"
        if case.usage_error is not None:
            assert res.exit_code == 2, f"{what}: {case.usage_error} accepted\n{res.output}"
        assert _snapshot(root) == before, f"{what}: changed files beside the command"
        home_after = _home_snapshot(pixelift_home)
        if res.exit_code == 2:
            assert home_after == home_before, f"{what}: a usage error changed PIXELIFT_HOME"
        else:  # a failed attempt may leave an empty cache folder (weights/<sha256>/), never a file
            files_after = {k: v for k, v in home_after.items() if not v[0]}
            files_before = {k: v for k, v in home_before.items() if not v[0]}
            assert files_after == files_before, f"{what}: changed PIXELIFT_HOME: {set(files_after) ^ set(files_before)}"
        assert sorted(s.id for s in models.user_specs()) == user_before, f"{what}: registered a model"
        if "--json" in case.extra and res.exit_code == 1:
            for line in res.stdout.splitlines():
                assert json.loads(line)["status"] == "error", line
