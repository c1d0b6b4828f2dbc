"""The inbox scales: pages with a ``Link`` to the next, and groups listed by their first members only."""

from __future__ import annotations

from tests.api import Account, Api
from tests.conftest import LiveServer

INBOX_MEMBERS = 20
BAD_PARAMS: list[dict[str, object]] = [
    {"limit": 0},
    {"limit": 201},
    {"before": "yesterday"},
    {"before": "1-x"},
    {"before": f"1-{2**64}"},
    {"before": f"{10**18}-1"},
]


def inbox_page(api: Api, account: Account, url: str = "/chats", **params: object) -> tuple[list[int], str]:
    """The ids of one page, and the next page's address (empty on the last page)."""
    response = api.call("GET", url, account, params=params or None, expect=None)
    assert response.status_code == 200, response.text
    return [chat["id"] for chat in response.json()], response.links.get("next", {}).get("url", "")


def test_the_inbox_pages_with_a_link_to_the_next_page(live_server: LiveServer) -> None:
    with live_server.http() as http:
        api = Api(http)
        ada, *friends = api.people("Ada", *(f"Friend{i}" for i in range(5)))
        chats = [api.private_chat(ada, friend)["id"] for friend in friends]
        newest_first = chats[::-1]

        first, next_url = inbox_page(api, ada, limit=2)
        assert first == newest_first[:2]
        assert next_url.startswith("/chats?")
        second, next_url = inbox_page(api, ada, next_url)
        assert second == newest_first[2:4]
        last, next_url = inbox_page(api, ada, next_url)
        assert (last, next_url) == (newest_first[4:], "")

        whole, next_url = inbox_page(api, ada)  # the default page holds them all
        assert (whole, next_url) == (newest_first, "")


def test_a_chat_that_becomes_active_while_paging_is_not_listed_twice(live_server: LiveServer) -> None:
    with live_server.http() as http:
        api = Api(http)
        ada, *friends = api.people("Ada", *(f"Friend{i}" for i in range(4)))
        chats = [api.private_chat(ada, friend)["id"] for friend in friends]

        first, next_url = inbox_page(api, ada, limit=2)
        api.send(friends[3], chats[3], "back on top")  # the newest chat, already listed, moves again
        api.send(friends[0], chats[0], "now the newest")  # an oldest chat, not yet listed, moves up
        rest, next_url = inbox_page(api, ada, next_url)

        assert first == [chats[3], chats[2]]
        assert (rest, next_url) == ([chats[1]], "")  # below the cursor only; chats[0] is on a new first page
        assert inbox_page(api, ada, limit=2)[0] == [chats[0], chats[3]]


def test_bad_paging_parameters_are_400(live_server: LiveServer) -> None:
    with live_server.http() as http:
        api = Api(http)
        [ada] = api.people("Ada")
        for params in BAD_PARAMS:
            api.call("GET", "/chats", ada, params=params, expect=400)


def test_a_big_group_lists_its_first_members_in_the_inbox_and_all_of_them_alone(
    live_server: LiveServer,
) -> None:
    with live_server.http() as http:
        api = Api(http)
        owner, *others = api.people("Owner", *(f"Member{i}" for i in range(INBOX_MEMBERS + 4)))
        group = api.group(owner, "Crowd", others)
        everyone = [owner.id, *(other.id for other in others)]

        [listed] = [chat for chat in api.chats(others[-1]) if chat["id"] == group["id"]]
        alone = api.chat(others[-1], group["id"])

    assert listed["member_count"] == alone["member_count"] == len(everyone)
    assert [m["user_id"] for m in listed["members"]] == everyone[:INBOX_MEMBERS]
    assert sorted(m["user_id"] for m in alone["members"]) == sorted(everyone)
    assert listed["unread_count"] == alone["unread_count"] == 0
