"""The replicas' directory: addresses that beat, stale ones left out, events for every replica but their origin (no
Ray, a pinned clock)."""

from __future__ import annotations

from server.scaleout.directory import KEPT_EVENTS, STALE_S, Directory, Member


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _member(replica: str, port: int, deployment: str = "modelport") -> Member:
    return Member(deployment, replica, "127.0.0.1", port)


def test_members_are_the_replicas_that_beat_ordered_by_deployment_then_address() -> None:
    clock = Clock()
    directory = Directory(clock)
    b, a, own = _member("b", 9002), _member("a", 9001), _member("own", 9000, deployment="modelport-1-churn")
    for member in (b, own, a):
        directory.register(member)
    assert directory.members() == [a, b, own]
    assert a.address == "127.0.0.1:9001"
    directory.leave("b")
    directory.leave("never-registered")  # a second stop, or one before it listened: nothing to do
    assert directory.members() == [a, own]


def test_a_silent_replica_is_stale_after_stale_s_and_a_beat_brings_it_back() -> None:
    clock = Clock()
    directory = Directory(clock)
    a, b = _member("a", 9001), _member("b", 9002)
    directory.register(a)
    directory.register(b)
    clock.now += STALE_S
    directory.beat(b, 0)
    assert directory.members() == [a, b]  # silent for exactly STALE_S: still in
    clock.now += 0.001
    assert directory.members() == [b]
    directory.beat(a, 0)  # judged stale, still running: its beat registers it again
    assert directory.members() == [a, b]
    moved = _member("a", 9003)  # restarted on another port under the same replica id
    directory.beat(moved, 0)
    assert directory.members() == [b, moved]


def test_events_reach_every_replica_but_their_origin_after_the_sequence_asked() -> None:
    directory = Directory(Clock())
    a, b, c = _member("a", 9001), _member("b", 9002), _member("c", 9003)
    assert directory.register(a) == 0
    first = directory.publish("alias", "iris", "a")
    assert first == 1
    assert directory.register(b) == 1  # b starts after the events it missed: it loads the models afresh anyway
    assert directory.beat(b, 1)[:2] == (1, [])
    second = directory.publish("alias", "wine", "b")
    assert second == 2
    assert directory.beat(a, 0)[:2] == (2, [("alias", "wine", "b")])  # its own event is not returned to a
    assert directory.beat(b, 1)[:2] == (2, [])  # nor to b
    assert directory.beat(c, 0)[:2] == (2, [("alias", "iris", "a"), ("alias", "wine", "b")])  # never registered
    assert directory.beat(c, 2)[:2] == (2, [])  # asked again after the last one: nothing new
    assert directory.beat(a, 2)[:2] == (2, [])


def test_the_event_log_keeps_the_last_kept_events() -> None:
    directory = Directory(Clock())
    a = _member("a", 9001)
    for i in range(KEPT_EVENTS + 5):
        directory.publish("alias", f"m{i}", "b")
    seq, events, _ = directory.beat(a, 0)
    assert seq == KEPT_EVENTS + 5  # sequence numbers keep counting
    assert len(events) == KEPT_EVENTS
    assert events[0] == ("alias", "m5", "b") and events[-1] == ("alias", f"m{KEPT_EVENTS + 4}", "b")
    assert directory.beat(a, seq - 2)[1] == [
        ("alias", f"m{KEPT_EVENTS + 3}", "b"),
        ("alias", f"m{KEPT_EVENTS + 4}", "b"),
    ]


def test_a_beat_tells_how_many_live_replicas_share_its_deployment() -> None:
    clock = Clock()
    directory = Directory(clock)
    a, b, other = _member("a", 9001), _member("b", 9002), Member("other", "o", "127.0.0.1", 9003)
    assert directory.beat(a, 0)[2] == 1
    directory.beat(other, 0)
    assert directory.beat(b, 0)[2] == 2  # a and b; another deployment's replica does not count
    clock.now += STALE_S + 1
    assert directory.beat(a, 0)[2] == 1  # b went silent
