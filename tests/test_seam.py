"""The seam between live and polled events, as one socket sees it (``windi_chat.seam``)."""

from __future__ import annotations

from windi_chat.events import event_payload, message_header, split_event
from windi_chat.frames import MessageFrame, MessageUpdatedFrame, ReadEventFrame, TypingEventFrame
from windi_chat.models import utcnow
from windi_chat.schemas import MessageOut
from windi_chat.seam import Mode, SocketFeed, polled, seam_end


def message(seq: int, rev: int | None = None) -> bytes:
    """A new message's event; its rev is its seq unless given."""
    rev = seq if rev is None else rev
    return event_payload(message_header(seq, rev), MessageFrame(message=message_out(seq, rev)))


def updated(seq: int, rev: int) -> bytes:
    """An edit, a delete or a reaction: the message's state under a new rev."""
    return event_payload(b"U%d" % rev, MessageUpdatedFrame(message=message_out(seq, rev)))


def message_out(seq: int, rev: int) -> MessageOut:
    return MessageOut(
        id=seq,
        chat_id=1,
        seq=seq,
        sender_id=1,
        text="hi",
        timestamp=utcnow(),
        client_id=f"c{seq}",
        read=False,
        rev=rev,
        reply_to=None,
        edited_at=None,
        deleted=False,
        reactions=[],
    )


READ = event_payload(b"-", ReadEventFrame(chat_id=1, user_id=2, seq=3, all_read_seq=1))
TYPING = event_payload(b"Tsocket", TypingEventFrame(chat_id=1, user_id=2))


def forward(feed: SocketFeed, payloads: list[bytes]) -> list[int | str]:
    """What the socket would send for ``payloads``: seqs for messages, ``U<rev>`` for changes and kinds
    for the rest."""
    sent: list[int | str] = []
    for payload in payloads:
        events = [payload] if feed.mode is Mode.LIVE and payload[:1] != b"P" else feed.admit(payload)
        for event in events:
            kind, argument, _ = split_event(event)
            if kind == ord("M"):
                if feed.fresh(kind, argument):
                    sent.append(int(argument.partition(b":")[0]))
            elif kind == ord("U"):
                if feed.fresh(kind, argument):
                    sent.append(f"U{int(argument)}")
            else:
                sent.append(chr(kind))
    return sent


def test_live_messages_pass_and_copies_from_the_catch_up_are_dropped() -> None:
    feed = SocketFeed(seen_seq=0)
    feed.seqs.caught_up(2)
    assert forward(feed, [message(2), message(3), message(4)]) == [3, 4]


def test_while_polling_live_messages_are_dropped_and_polled_ones_go_out_once() -> None:
    feed = SocketFeed(seen_seq=4)
    feed.poll()
    sent = forward(feed, [message(5), polled(message(5)), polled(message(6)), polled(message(5)), message(7)])
    assert sent == [5, 6]
    assert feed.seqs.delivered == 6


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


# Sockets that follow revs (``after_rev``) ----------------------------------------------------------


def test_after_a_replay_by_rev_live_copies_of_messages_and_changes_are_dropped_by_rev() -> None:
    feed = SocketFeed(seen_seq=3, seen_rev=5, by_rev=True)
    feed.revs.caught_up(7)
    # Message 4 (rev 6) and the change of 2 (rev 7) were replayed; their live events are copies.
    sent = forward(feed, [message(4, 6), updated(2, 7), message(5, 8), updated(4, 9), updated(2, 7)])
    assert sent == [5, "U9"]
    assert (feed.seqs.delivered, feed.revs.delivered) == (5, 9)


def test_a_socket_that_follows_seqs_compares_messages_by_seq_and_changes_by_rev() -> None:
    feed = SocketFeed(seen_seq=0, seen_rev=0)
    feed.seqs.caught_up(2)
    sent = forward(feed, [message(2, 2), updated(1, 3), message(3, 4), updated(1, 3)])
    assert sent == ["U3", 3, "U3"]  # a repeated change is not told apart while live, as before
    assert feed.revs.delivered == 4


def test_while_polling_live_changes_are_dropped_and_polled_ones_go_out_once() -> None:
    for by_rev in (False, True):
        feed = SocketFeed(seen_seq=4, seen_rev=4, by_rev=by_rev)
        feed.poll()
        sent = forward(
            feed,
            [
                updated(2, 5),
                polled(updated(2, 5)),
                polled(message(5, 6)),
                polled(updated(2, 5)),
                updated(3, 7),
            ],
        )
        assert sent == ["U5", 5], by_rev
        assert feed.revs.delivered == 6


def test_at_the_seam_held_live_changes_follow_the_last_batch_without_copies() -> None:
    for by_rev in (False, True):
        feed = SocketFeed(seen_seq=4, seen_rev=4, by_rev=by_rev)
        feed.poll()
        feed.resume(generation=3)
        # Live changes 6 and 7 arrive before the last batch (5, 6) and its marker; 8 comes after it.
        sent = forward(
            feed,
            [
                updated(1, 6),
                message(5, 7),
                polled(updated(2, 5)),
                polled(updated(1, 6)),
                seam_end(3),
                updated(2, 8),
            ],
        )
        assert sent == ["U5", "U6", 5, "U8"], by_rev
        assert feed.mode is Mode.LIVE
        assert forward(feed, [updated(1, 6), updated(3, 9)]) == ["U9"], by_rev  # a late copy is dropped
