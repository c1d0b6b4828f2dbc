"""The seam between live and polled events, as one socket sees it (``windi_chat.seam``)."""

from __future__ import annotations

import msgspec

from windi_chat.events import event_payload, split_event
from windi_chat.frames import MessageFrame, MessageUpdatedFrame, ReadEventFrame, TypingEventFrame
from windi_chat.models import utcnow
from windi_chat.schemas import MessageOut
from windi_chat.seam import Mode, SocketFeed, polled, seam_end


def message(seq: int) -> bytes:
    out = MessageOut(
        id=seq,
        chat_id=1,
        seq=seq,
        sender_id=1,
        text="hi",
        timestamp=utcnow(),
        client_id=f"c{seq}",
        read=False,
        rev=seq,
        reply_to=None,
        edited_at=None,
        deleted=False,
        reactions=[],
    )
    return event_payload(b"M%d" % seq, MessageFrame(message=out))


READ = event_payload(b"-", ReadEventFrame(chat_id=1, user_id=2, seq=3, all_read_seq=1))
TYPING = event_payload(b"Tsocket", TypingEventFrame(chat_id=1, user_id=2))


def forward(feed: SocketFeed, payloads: list[bytes]) -> list[int | str]:
    """What the socket would send for ``payloads``, as seqs for messages and kinds for the rest."""
    sent: list[int | str] = []
    for payload in payloads:
        events = [payload] if feed.mode is Mode.LIVE and payload[:1] != b"P" else feed.admit(payload)
        for event in events:
            kind, argument, _ = split_event(event)
            if kind == ord("M"):
                if feed.fresh(int(argument)):
                    sent.append(int(argument))
            else:
                sent.append(chr(kind))
    return sent


def test_live_messages_pass_and_copies_from_the_catch_up_are_dropped() -> None:
    feed = SocketFeed(seen_seq=0)
    feed.caught_up(2)
    assert forward(feed, [message(2), message(3), message(4)]) == [3, 4]


def test_while_polling_live_messages_are_dropped_and_polled_ones_go_out_once() -> None:
    feed = SocketFeed(seen_seq=4)
    feed.poll()
    sent = forward(feed, [message(5), polled(message(5)), polled(message(6)), polled(message(5)), message(7)])
    assert sent == [5, 6]
    assert feed.delivered == 6


def test_reads_membership_and_typing_that_still_arrive_live_go_out_while_polling() -> None:
    feed = SocketFeed(seen_seq=0)
    feed.poll()
    assert forward(feed, [READ, TYPING, polled(READ)]) == ["-", "T", "-"]


def test_at_the_seam_held_live_messages_follow_the_last_batch_without_copies() -> None:
    feed = SocketFeed(seen_seq=4)
    feed.poll()
    feed.resume(generation=7)
    # Live 6 and 7 arrive before the last batch (5, 6) and its marker; 8 arrives live after it.
    sent = forward(
        feed, [message(6), message(7), polled(message(5)), polled(message(6)), seam_end(7), message(8)]
    )
    assert sent == [5, 6, 7, 8]
    assert feed.mode is Mode.LIVE
    assert forward(feed, [message(6), message(9)]) == [9]  # a late live copy of a polled one is dropped


def test_a_marker_of_an_abandoned_seam_does_not_end_the_next_one() -> None:
    feed = SocketFeed(seen_seq=0)
    feed.poll()
    feed.resume(generation=1)
    feed.poll()  # the backend was lost again before the marker was read
    feed.resume(generation=2)
    assert forward(feed, [message(1), seam_end(1)]) == []
    assert feed.mode is Mode.RESUMING
    assert forward(feed, [polled(message(1)), seam_end(2)]) == [1]
    assert feed.mode is Mode.LIVE


def test_polled_events_left_over_after_the_seam_are_dropped() -> None:
    feed = SocketFeed(seen_seq=0)
    feed.poll()
    feed.resume(generation=0)
    assert forward(feed, [seam_end(0), message(1), polled(message(1)), polled(message(2)), polled(READ)]) == [
        1
    ]


def updated(seq: int, rev: int) -> bytes:
    """A ``message_updated`` event (an edit, a delete or a reaction), which the poller does not read."""
    out = split_event(message(seq))[2]
    frame = MessageUpdatedFrame(message=msgspec.json.decode(out, type=MessageFrame).message)
    return event_payload(b"U%d" % rev, frame)


def test_message_updated_events_go_out_live_while_polling_and_at_the_seam() -> None:
    feed = SocketFeed(seen_seq=4)
    assert forward(feed, [updated(4, 9)]) == ["U"]
    feed.poll()
    assert forward(feed, [updated(4, 10), polled(message(5)), updated(5, 11)]) == ["U", 5, "U"]
    feed.resume(generation=0)
    assert forward(feed, [updated(5, 12), polled(message(6)), seam_end(0), updated(6, 13)]) == [
        "U",
        6,
        "U",
    ]
    assert feed.mode is Mode.LIVE
