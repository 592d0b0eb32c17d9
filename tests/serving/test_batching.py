"""The micro-batcher behind the server: same-key requests that arrive together run as one batch of at
most `max_size`, other keys wait for a batch of their own, and every request gets its own result."""

from __future__ import annotations

import asyncio

import pytest

from bisenet_pl.serving.batching import MicroBatcher


def _run(batcher: MicroBatcher, items: list[str]) -> list[str]:
    async def main() -> list[str]:
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in items))
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_requests_arriving_together_are_batched_by_key_and_size() -> None:
    seen: list[list[str]] = []

    def process(items: list[str]) -> list[str]:
        seen.append(list(items))
        return [i.upper() for i in items]

    batcher = MicroBatcher(process, max_size=4, timeout_ms=50, key=lambda item: item[0])
    items = ["a1", "a2", "b1", "a3", "a4", "a5", "b2"]
    assert _run(batcher, items) == [i.upper() for i in items]
    # the oldest request's key first, four at most; then the oldest left is b1, so the b's, then a5
    assert seen == [["a1", "a2", "a3", "a4"], ["b1", "b2"], ["a5"]]
    assert batcher.stats.as_dict() == {
        "requests": 7,
        "batches": 3,
        "largest": 4,
        "sizes": {"1": 1, "2": 1, "4": 1},
    }


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_serving() -> None:
    def process(items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError("boom")
        return items

    async def main() -> tuple[BaseException | str, str]:
        batcher = MicroBatcher(process, max_size=2, timeout_ms=0)
        batcher.start()
        try:
            first = await asyncio.gather(batcher.submit("bad"), return_exceptions=True)
            return first[0], await batcher.submit("good")
        finally:
            await batcher.stop()

    failed, after = asyncio.run(main())
    assert isinstance(failed, RuntimeError) and str(failed) == "boom"
    assert after == "good"


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_size"):
        MicroBatcher(lambda items: items, max_size=0)
    with pytest.raises(ValueError, match="timeout_ms"):
        MicroBatcher(lambda items: items, timeout_ms=-1)
