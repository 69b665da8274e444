"""gateway.report.maker.MakerLoader: the CJK font (tens of megabytes) is parsed in a worker
thread, never on the event loop that serves every other call; concurrent first reports share
one load; an unusable font is a ConfigError naming the file, not kept, so a font installed
afterwards is found without a restart."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import gateway.report.maker as maker_module
from gateway.audit.note import Ed25519Signer, generate_key
from gateway.errors import ConfigError
from gateway.report import MakerLoader, ReportMaker
from tests.unit.report.report_kit import font


def _signer() -> Ed25519Signer:
    return Ed25519Signer.from_key_string(generate_key("credit-gateway.test/audit")[0])


async def test_the_font_loads_off_the_loop_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real_font = font()
    threads: list[int] = []
    real = maker_module.register_font

    def spy(path: Path) -> str:
        threads.append(threading.get_ident())
        return real(path)

    monkeypatch.setattr(maker_module, "register_font", spy)
    loader = MakerLoader(_signer(), real_font)
    first, second = await asyncio.gather(loader.get(), loader.get())
    assert isinstance(first, ReportMaker) and first is second
    assert len(threads) == 1 and threads[0] != threading.get_ident()
    assert await loader.get() is first and len(threads) == 1  # kept


async def test_an_unusable_font_is_refused_and_not_kept(tmp_path: Path) -> None:
    real_font = font()
    configured = tmp_path / "font.ttc"
    configured.write_bytes(b"not a TrueType font")
    loader = MakerLoader(_signer(), configured)
    with pytest.raises(ConfigError) as err:
        await loader.get()
    assert err.value.key == "gateway.report_font"
    assert err.value.problem.startswith(f"{configured} is not a usable TrueType font: ")
    configured.unlink()
    configured.symlink_to(real_font)  # the operator installs the font; no restart
    assert isinstance(await loader.get(), ReportMaker)
