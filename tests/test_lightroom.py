"""The Lightroom Classic plug-in, run for real: its Lua under Lua 5.1 (Lightroom's semantics, via
``lupa``) with a fake Lightroom SDK written in Lua (integrations/lightroom/tests/fake_sdk.lua), against a
real ``pixelift serve`` on loopback that the plug-in starts itself. The test checks the files
produced and the catalog calls the fake recorded.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelift.service import state
from pixelift.service.client import ServiceClient
from tests.images import photo_crop
from tests.test_service import MODEL, warm_model

lua51 = pytest.importorskip("lupa.lua51")
pytest.importorskip("aiohttp")

ROOT = Path(__file__).resolve().parents[1] / "integrations" / "lightroom"
PLUGIN = ROOT / "pixelift.lrplugin"
FAKE_SDK = ROOT / "tests" / "fake_sdk.lua"
LUA_FILES = sorted([*PLUGIN.glob("*.lua"), FAKE_SDK])


def _luac() -> str | None:
    return next((p for p in ("luac5.4", "luac5.3", "luac5.1", "luac") if shutil.which(p)), None)


@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: p.name)
def test_every_lua_file_passes_luac_and_compiles_as_lua_5_1(path: Path) -> None:
    luac = _luac()
    if luac is None:
        pytest.skip("no luac here (Debian: apt-get install lua5.4)")
    r = subprocess.run([luac, "-p", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lua = lua51.LuaRuntime()
    compiled = lua.eval("function(src, name) local f, err = loadstring(src, name) return err end")
    assert compiled(path.read_text(encoding="utf-8"), path.name) is None  # Lightroom's Lua is 5.1


def test_info_lua_declares_the_menus_the_filter_and_the_manager_section() -> None:
    lua = lua51.LuaRuntime()
    info = lua.execute(PLUGIN.joinpath("Info.lua").read_text(encoding="utf-8"))
    assert info["LrSdkVersion"] >= 6 and info["LrToolkitIdentifier"] == "org.pixelift.lightroom"
    for menu in ("LrLibraryMenuItems", "LrExportMenuItems"):
        item = info[menu][1]
        assert item["title"] == "Enhance with pixelift…" and (PLUGIN / item["file"]).is_file()
    assert (PLUGIN / info["LrExportFilterProvider"][1]["file"]).is_file()
    assert (PLUGIN / info["LrPluginInfoProvider"]).is_file()


# --- JSON ---------------------------------------------------------------------------------


def _json_runtime(version: str = "lua51") -> Any:
    import importlib

    lua = importlib.import_module(f"lupa.{version}").LuaRuntime()
    lua.execute(f"package.path = {json.dumps(str(PLUGIN / '?.lua'))} .. ';' .. package.path")
    return lua


@pytest.mark.parametrize("version", ["lua51", "lua54"])
def test_the_plugins_json_round_trips_and_agrees_with_python(version: str) -> None:
    lua = _json_runtime(version)
    decode_encode = lua.eval("function(s) local j = require 'PixeliftJSON' return j.encode(j.decode(s)) end")
    values: list[Any] = [
        {"a": [1, 2.5, -3e-7, True, False], "b": {"c": "d"}, "e": [], "f": {}},
        ["é ü ß 日本 😀", 'quote " back \\ slash / tab \t nl \n cr \r ctl \u0001 del \x7f'],
        {"jobs": [{"id": "x1", "files_done": 0, "progress": 0.25}], "n": 123456789012},
        [[[]], [[1]], {"k": [{"k": None}]}],
        "plain",
        0,
        -1.5,
    ]
    for v in values:
        text = decode_encode(json.dumps(v))
        back = json.loads(text)
        expected = json.loads(json.dumps(v), object_hook=lambda d: {k: x for k, x in d.items() if x is not None})
        assert back == expected, (v, text)
    # escapes decoded: \u sequences, surrogate pairs
    decode = lua.eval("function(s) local j = require 'PixeliftJSON' return j.decode(s) end")
    assert decode(r'"\u00e9\ud83d\ude00\n\/"') == "é😀\n/"
    assert decode("  [1, 2 ,3]  ")[3] == 3
    for bad in ("", "{", '{"a" 1}', "[1,]", '"\\x"', "tru", "1 2", '"\\ud800"', '{"a":1,}', "\x01"):
        ok = lua.eval("function(s) local j = require 'PixeliftJSON' return (pcall(j.decode, s)) end")(bad)
        assert ok is False, bad
    encode = lua.eval("function(v) local j = require 'PixeliftJSON' return (pcall(j.encode, v)) end")
    assert encode(math.inf) is False


_JSON_LEAVES = st.one_of(
    st.booleans(),
    st.integers(-(10**14), 10**14),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",))),
)
_JSON = st.recursive(_JSON_LEAVES, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(_JSON)
def test_the_plugins_json_round_trips_any_value(value: Any) -> None:
    text = _ROUND_TRIP(json.dumps(value))
    assert json.loads(text) == value


_ROUND_TRIP = _json_runtime().eval("function(s) local j = require 'PixeliftJSON' return j.encode(j.decode(s)) end")


# --- end to end -------------------------------------------------------------------------------


class Lightroom:
    """Lua 5.1 with the fake SDK and the plug-in on its path; host helpers in ``PY``."""

    def __init__(self, tmp: Path) -> None:
        self.lua = lua51.LuaRuntime(unpack_returned_tuples=True)
        g = self.lua.globals()
        temp = tmp / "lr-temp"
        temp.mkdir()
        helpers = {
            "pluginPath": str(PLUGIN),
            "tempDir": str(temp),
            "homeDir": str(tmp),
            "http": _http,
            "execute": lambda cmd: subprocess.run(cmd, shell=True, timeout=180).returncode,
            "sleep": time.sleep,
            "exists": _exists,
            "mkdirs": lambda p: Path(p).mkdir(parents=True, exist_ok=True),
            "delete": _delete,
            "move": lambda a, b: bool(shutil.move(a, b)),
            "render": _render,
        }
        g.PY = self.lua.table_from(helpers)
        self.lua.execute(f"package.path = {json.dumps(str(PLUGIN / '?.lua'))} .. ';' .. package.path")
        self.lua.execute(FAKE_SDK.read_text(encoding="utf-8"))
        self.fake = g.FAKE

    def photo(self, path: Path, **meta: Any) -> Any:
        raw = {"path": str(path), "rating": meta.get("rating"), "colorNameForLabel": meta.get("label", "none")}
        if "gps" in meta:
            raw["gps"] = self.lua.table_from(meta["gps"])
        fields = {
            "raw": self.lua.table_from(raw),
            "formatted": self.lua.table_from({"caption": meta.get("caption", ""), "title": ""}),
            "keywords": self.lua.table_from(meta.get("keywords", [])),
        }
        return self.fake.newPhoto(self.lua.table_from(fields))

    def select(self, photos: list[Any]) -> None:
        self.fake.selected = self.lua.table_from(photos)

    def calls(self, name: str) -> list[Any]:
        return [c for c in self.fake.calls.values() if c["name"] == name]


def _http(method: str, url: str, body: str, headers: str, timeout: float) -> tuple[int, str]:
    req = urllib.request.Request(url, data=None if method == "GET" else body.encode(), method=method)
    for line in headers.splitlines():
        key, value = line.split(": ", 1)
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def _exists(path: str) -> str | bool:
    p = Path(path)
    return "directory" if p.is_dir() else "file" if p.is_file() else False


def _delete(path: str) -> bool:
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
    return True


def _render(src: str, dest: str, fmt: str, bits: int) -> tuple[bool, str | None]:
    """What Lightroom's export does for the fake: the photo as a 16-bit TIFF."""
    try:
        img = np.asarray(Image.open(src).convert("RGB"))
    except OSError as exc:
        return False, f"cannot render {src}: {exc}"
    assert fmt == "TIFF" and bits == 16
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(dest, img.astype(np.uint16) * 257, photometric="rgb")
    return True, None


@pytest.fixture
def lightroom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lightroom]:
    """A fake Lightroom whose plug-in finds no service yet (it starts one) in a private folder."""
    warm_model()
    folder = tmp_path / "service"
    monkeypatch.setenv(state.ENV_SERVICE_DIR, str(folder))
    lr = Lightroom(tmp_path)
    lr.fake.prefs.pixeliftPath = str(Path(sys.executable).parent / "pixelift")
    lr.fake.prefs.lastModel = MODEL
    yield lr
    client = ServiceClient.discover(folder)
    if client is not None:
        pid = client.health()["pid"]
        client.shutdown()
        deadline = time.monotonic() + 60
        while state.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _photos(lr: Lightroom, folder: Path, n: int, size: int = 48) -> list[Any]:
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i, name in enumerate(("astronaut", "chelsea", "coffee", "rocket")[:n]):
        path = folder / f"IMG_{i}.png"
        Image.fromarray(photo_crop(name, size)).save(path)
        photos.append(
            lr.photo(path, rating=i + 1, label="red", caption=f"caption {i}", keywords=["cat", f"k{i}"],
                     gps={"latitude": 48.85 + i, "longitude": 2.35})
        )  # fmt: skip
    return photos


def test_menu_item_enhances_every_selected_photo_through_a_service_it_starts(lightroom: Lightroom, tmp_path: Path) -> None:
    lr = lightroom
    photos = _photos(lr, tmp_path / "shoot", 3)
    lr.select(photos)
    summary = lr.fake.runPluginFile  # the menu script starts an async task (run at once by the fake)
    summary("PixeliftMenuItem.lua")

    assert not lr.calls("LrDialogs.message"), [c["text"] for c in lr.calls("LrDialogs.message")]
    (started,) = lr.calls("LrTasks.execute")
    assert "serve --detach" in started["command"]
    dialog = lr.calls("LrDialogs.presentModalDialog")[0]
    assert dialog["title"] == "Enhance with pixelift"
    rows = [dialog["contents"]["args"][i]["args"][2]["args"] for i in range(1, 6)]  # each row: label, popup
    values = [[item["value"] for item in row["items"].values()] for row in rows]
    assert "auto" in values[0] and MODEL in values[0]  # the models come from the service
    assert "cpu" in values[3] and "fp32" in values[2] and values[4][0] == "ProPhotoRGB"
    (export,) = lr.calls("LrExportSession")
    settings = export["settings"]
    assert export["count"] == 3  # all the selected photos, not the first
    assert (settings["LR_format"], settings["LR_export_bitDepth"], settings["LR_export_colorSpace"]) == ("TIFF", 16, "ProPhotoRGB")

    added = lr.calls("catalog:addPhoto")
    assert len(added) == 3
    for call, original in zip(sorted(added, key=lambda c: c["path"]), photos, strict=True):
        out = Path(call["path"])
        assert out == tmp_path / "shoot" / f"{Path(original.raw.path).stem}-pixelift.tif"
        assert call["stackWith"].raw.path == original.raw.path and call["position"] == "above"
        data = tifffile.imread(out)
        assert data.dtype == np.uint16 and data.shape == (96, 96, 3)  # 16-bit kept, x2
    sets = {(c["photo"].raw.path, c["key"]) for c in lr.calls("photo:setRawMetadata")}
    for call in added:
        for key in ("rating", "colorNameForLabel", "caption", "gps"):
            assert (call["path"], key) in sets, key
    first = next(c for c in added if c["path"].endswith("IMG_0-pixelift.tif"))["photo"]
    assert first.raw.rating == 1 and first.raw.colorNameForLabel == "red" and first.raw.caption == "caption 0"
    assert first.raw.gps.latitude == pytest.approx(48.85)
    assert sorted(k.name for k in first.keywords.values()) == ["cat", "k0"]
    assert len(lr.calls("catalog:withWriteAccessDo")) == 3
    scope = lr.fake.scope
    assert scope.finished and scope.portions[len(scope.portions)] == pytest.approx(1.0)
    assert not any((tmp_path / "lr-temp").iterdir())  # the intermediate TIFFs are removed

    # the plug-in manager section reports the running service
    info = lr.lua.eval("require 'PixeliftInfoProvider'")
    props = lr.lua.table()
    sections = info.sectionsForTopOfDialog(lr.lua.eval("import('LrView').osFactory()"), props)
    assert props.serviceStatus.startswith("Running: pixelift") and sections[1]["title"] == "pixelift service"


def test_errors_go_to_one_dialog_and_the_other_photos_still_finish(lightroom: Lightroom, tmp_path: Path) -> None:
    lr = lightroom
    photos = _photos(lr, tmp_path / "shoot", 2)
    gone = lr.photo(tmp_path / "shoot" / "deleted.png")
    lr.select([photos[0], gone, photos[1]])
    lr.fake.runPluginFile("PixeliftMenuItem.lua")
    assert len(lr.calls("catalog:addPhoto")) == 2
    (message,) = lr.calls("LrDialogs.message")
    assert "deleted.png" in message["text"] and message["kind"] == "critical"


def test_a_provider_passed_over_is_said_in_a_warning_dialog(lightroom: Lightroom, tmp_path: Path) -> None:
    """The provider chosen in the dialog cannot run here (no NVIDIA GPU): the photos still finish,
    on the provider automatic selection picks, and a dialog says so once, not per photo."""
    lr = lightroom
    lr.fake.prefs.lastProvider = "tensorrt"
    lr.select(_photos(lr, tmp_path / "shoot", 2))
    lr.fake.runPluginFile("PixeliftMenuItem.lua")
    assert len(lr.calls("catalog:addPhoto")) == 2
    (message,) = lr.calls("LrDialogs.message")
    assert message["kind"] == "warning" and "1 warning" in message["title"], message
    assert "tensorrt" in message["text"] and "not available" in message["text"]


def test_cancel_in_the_progress_scope_cancels_the_job(lightroom: Lightroom, tmp_path: Path) -> None:
    lr = lightroom
    photos = _photos(lr, tmp_path / "shoot", 4, size=256)
    lr.select(photos)
    lr.fake.cancelAfterPolls = 5  # 4 polls in the export, 1 before submitting; cancel at the first look at the job
    summary = lr.lua.eval("require 'PixeliftEnhance'").run(lr.lua.table_from(photos), lr.lua.table_from({"model": MODEL}))
    assert summary.cancelled is True and summary.job
    client = ServiceClient.discover()
    assert client is not None and client.job(summary.job)["status"] == "cancelled"
    imported = {Path(c["path"]).name for c in lr.calls("catalog:addPhoto")}
    written = {p.name for p in (tmp_path / "shoot").glob("*-pixelift*")}
    assert written == imported and len(imported) < 4  # what was cancelled left no file
    assert not list((tmp_path / "shoot").glob(".*.part"))


def test_export_post_process_action_replaces_each_rendering_with_its_enhanced_version(lightroom: Lightroom, tmp_path: Path) -> None:
    lr = lightroom
    rendered = tmp_path / "export" / "IMG_0.jpg"
    rendered.parent.mkdir()
    Image.fromarray(photo_crop("chelsea", 40)).save(rendered, quality=95)
    lr.lua.execute(
        """
        local path = ...
        FILTER_DONE = {}
        local source = { waitForRender = function() return true, path end }
        local target = { renditionIsDone = function(_, ok, msg) FILTER_DONE[#FILTER_DONE + 1] = { ok = ok, msg = msg } end }
        local context = {
            propertyTable = { pixelift_model = 'span-x2-ch48', pixelift_scale = '2', pixelift_precision = 'auto', pixelift_provider = 'auto',
                              LR_format = 'JPEG', LR_jpeg_quality = 0.6 },
            renditions = function() local done = false return function() if done then return nil end done = true return source, target end end,
        }
        require('PixeliftExportFilter').postProcessRenderedPhotos({}, context)
        """,
        str(rendered),
    )
    done = lr.lua.globals().FILTER_DONE
    assert done[1].ok is True, done[1].msg
    with Image.open(rendered) as img:
        assert img.format == "JPEG" and img.size == (80, 80)
    assert sorted(p.name for p in rendered.parent.iterdir()) == ["IMG_0.jpg"]
    from pixelift.runtime.autopilot import jpeg_quality_from_tables

    quality = jpeg_quality_from_tables(rendered.read_bytes())  # the export's own quality, not 95
    assert quality is not None and abs(quality - 60) <= 2, quality


def _run(lr: Lightroom, photos: list[Any]) -> tuple[Any, list[str]]:
    enh = lr.lua.eval("require 'PixeliftEnhance'")
    summary = enh.run(lr.lua.table_from(photos), lr.lua.table_from({"model": MODEL, "provider": "cpu", "precision": "fp32"}))
    return summary, [summary.errors[i] for i in range(1, len(summary.errors) + 1)]


def test_a_raw_jpeg_pair_and_a_virtual_copy_get_results_of_their_own(lightroom: Lightroom, tmp_path: Path) -> None:
    """IMG_1.CR2 + IMG_1.JPG in one folder, or a photo and its virtual copy, were given one output name: the
    service refused the whole job after every photo had been exported, and nothing was enhanced."""
    lr = lightroom
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    Image.fromarray(photo_crop("astronaut", 48)).save(shoot / "IMG_1.png")
    Image.fromarray(photo_crop("chelsea", 48)).save(shoot / "IMG_1.jpg")
    pair = [lr.photo(shoot / "IMG_1.png"), lr.photo(shoot / "IMG_1.jpg"), lr.photo(shoot / "IMG_1.png")]  # + a copy
    _, errors = _run(lr, pair)
    assert errors == []
    assert sorted(Path(c["path"]).name for c in lr.calls("catalog:addPhoto")) == [
        "IMG_1-pixelift-2.tif", "IMG_1-pixelift-3.tif", "IMG_1-pixelift.tif",
    ]  # fmt: skip


def test_a_failed_import_is_that_photos_problem_only(lightroom: Lightroom, tmp_path: Path) -> None:
    """Lightroom refusing one import (already in the catalog) ended the run in an 'unexpected error' dialog with
    nothing imported, the progress scope open and the intermediate TIFFs left in the temp folder."""
    lr = lightroom
    photos = _photos(lr, tmp_path / "shoot", 3)
    lr.lua.execute(
        """
        local catalog = import('LrApplication').activeCatalog()
        local add = catalog.addPhoto
        catalog.addPhoto = function(self, path, ...)
            if path:find('IMG_0') then error('LrCatalog: file already in catalog') end
            return add(self, path, ...)
        end
        """
    )
    summary, errors = _run(lr, photos)
    assert len(errors) == 1 and "IMG_0-pixelift.tif: written, but not imported" in errors[0], errors
    assert len(summary.imported) == 2 and lr.fake.scope.finished
    assert not any((tmp_path / "lr-temp").iterdir())


def test_a_missed_poll_does_not_lose_the_job(lightroom: Lightroom, tmp_path: Path) -> None:
    """One status poll that fails (a busy machine) made the plug-in give up, delete the job's inputs while the
    service worked on them, and fail every photo; it polls again now, and cancels the job when it gives up."""
    lr = lightroom
    photos = _photos(lr, tmp_path / "shoot", 3)
    polls = {"n": 0}

    def flaky(method: str, url: str, body: str, headers: str, timeout: float) -> tuple[int, str]:
        if method == "GET" and "/jobs/" in url:
            polls["n"] += 1
            if polls["n"] == 2:
                return 0, "timed out"
        return _http(method, url, body, headers, timeout)

    lr.lua.globals().PY.http = flaky
    summary, errors = _run(lr, photos)
    assert errors == [] and len(summary.imported) == 3 and polls["n"] > 2
