"""ModelPool: the lending pool the offline engines share (no engine needed)."""

from __future__ import annotations

import threading

import pytest

from voicerouter.providers.local import ModelPool


class Counting(ModelPool[int]):
    def __init__(self, max_size: int, *, fail_first: bool = False) -> None:
        super().__init__(max_size)
        self.fail_first = fail_first
        self.loads = 0

    def _load(self) -> int:
        self.loads += 1
        if self.fail_first and self.loads == 1:
            raise RuntimeError("load failed")
        self.load_seconds.append(0.25)
        return self.loads


def test_copies_are_reused_and_made_only_while_all_are_busy():
    pool = Counting(2)
    first = pool.acquire()
    pool.release(first)
    assert pool.acquire() == first  # an idle copy comes back, no second load
    second = pool.acquire()  # the first is busy: the pool grows
    assert (pool.created, pool.loads, second) == (2, 2, 2)


def test_a_borrower_waits_for_a_copy_when_the_pool_is_full():
    pool = Counting(1)
    held = pool.acquire()
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # nothing idle and no room to grow
    pool.release(held)
    waiter.join(10)
    assert got == [held] and pool.loads == 1


def test_a_failed_load_gives_its_place_back():
    pool = Counting(1, fail_first=True)
    with pytest.raises(RuntimeError):
        pool.acquire()
    assert pool.created == 0
    assert pool.acquire() == 2  # the place is free again: the next borrower loads


def test_preload_loads_one_copy_once():
    pool = Counting(2)
    assert pool.preload() == 0.25
    assert pool.preload() == 0.0
    assert pool.loads == 1
