"""Against a real running hub and worker (skipped when SWITCH_TEST_URL is unset)."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import datetime
from typing import Any, Callable, List

import httpx
import pytest

from switch_sdk import (
    AsyncClient,
    Client,
    DeadLetter,
    Delivery,
    DeliveryPage,
    Explanation,
    ForbiddenError,
    InvalidRequestError,
    Message,
    MessageDelivery,
    MessagePage,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    PublishResult,
    ReplayResult,
    Subscriber,
    UnauthorizedError,
    WebhookVerificationError,
    sign_token,
    verify_webhook,
)

from .conftest import HUB_SECRET, Receiver, free_port, needs_hub, wait_for

NewSubscriber = Callable[..., Subscriber]
AUTHOR = "sdk-python-tests"


def test_nothing_listening_is_a_network_error() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", jwt_secret="s", timeout=3) as client:
        with pytest.raises(NetworkError) as info:
            client.publish("orders.created", {"id": 1})
        assert info.value.status is None
        with pytest.raises(NetworkError):
            client.ping()


@pytest.mark.asyncio
async def test_nothing_listening_is_a_network_error_async() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", timeout=3) as client:
        with pytest.raises(NetworkError):
            await client.health()


@needs_hub
def test_ping_and_health(admin: Client) -> None:
    assert admin.ping() is True
    health = admin.health()
    assert health["status"] == "ok"
    assert health["database"] == "ok"
    assert health["redis"] == "ok"


@needs_hub
def test_publish_counts_matching_subscribers(
    admin: Client, new_subscriber: NewSubscriber, topic: str, receiver: Receiver
) -> None:
    result = admin.publish(topic, {"total": 1})
    assert isinstance(result, PublishResult)
    assert isinstance(result.message_id, str) and result.message_id
    assert result.matched == 0
    assert result.duplicate is False

    new_subscriber(topic, receiver.url + "/all")
    new_subscriber(topic, receiver.url + "/big", filter_expression="body.total > 100")
    admin.refresh()

    small = admin.publish(topic, {"total": 50})
    assert small.matched == 1
    big = admin.publish(topic, {"total": 150})
    assert big.matched == 2
    assert big.message_id != small.message_id


@needs_hub
def test_publish_with_every_field(admin: Client, topic: str) -> None:
    result = admin.publish(
        topic,
        [1, "two", None],
        headers={"X-Trace": "abc"},
        query_params={"source": "web"},
        path_params={"id": "42"},
        http_method="PUT",
    )
    assert result.matched == 0 and result.message_id


@needs_hub
def test_idempotency_key(admin: Client, topic: str) -> None:
    key = f"sdkpy-{uuid.uuid4()}"
    first = admin.publish(topic, {"n": 1}, idempotency_key=key)
    assert first.duplicate is False
    second = admin.publish(topic, {"n": 1}, idempotency_key=key)
    assert second.duplicate is True
    assert second.message_id == first.message_id
    third = admin.publish(topic, {"n": 1}, idempotency_key=key + "-other")
    assert third.duplicate is False
    assert third.message_id != first.message_id


@needs_hub
def test_wrong_secret_is_unauthorized(hub_url: str, topic: str) -> None:
    with Client(hub_url, jwt_secret="not-the-hub-secret", author=AUTHOR) as client:
        with pytest.raises(UnauthorizedError) as info:
            client.publish(topic, {"n": 1})
    assert info.value.status == 401
    assert info.value.code == "unauthorized"
    with Client(hub_url, token="not.a.jwt") as client:
        with pytest.raises(UnauthorizedError):
            client.publish(topic)
    with Client(hub_url) as client:
        with pytest.raises(UnauthorizedError):
            client.publish(topic)


@needs_hub
def test_admin_endpoint_without_admin_scope_is_forbidden(hub_url: str, hub_secret: str) -> None:
    for scope in ("publish", None):
        with Client(hub_url, jwt_secret=hub_secret, author=AUTHOR, scope=scope) as client:
            with pytest.raises(ForbiddenError) as info:
                client.subscribers.list()
            assert info.value.status == 403
            assert info.value.code == "forbidden"
            # Publishing is still allowed.
            assert client.publish(f"sdkpy.{uuid.uuid4().hex[:12]}").message_id


@needs_hub
def test_body_over_one_mib_is_too_large(admin: Client, topic: str) -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        admin.publish(topic, {"blob": "x" * (1024 * 1024 + 1)})
    assert info.value.status == 413
    assert info.value.code == "payload_too_large"


@needs_hub
def test_bad_topic_is_invalid_request(admin: Client) -> None:
    with pytest.raises(InvalidRequestError) as info:
        admin.publish("not a valid topic!")
    assert info.value.status == 400
    assert info.value.code == "invalid_request"


@needs_hub
def test_subscribers_crud_and_rotate_secret(admin: Client, topic: str) -> None:
    pattern = topic.rsplit(".", 1)[0] + ".*"
    created = admin.subscribers.create(
        pattern,
        "http://127.0.0.1:9/hook/:id",
        filter_expression="body.total > 100",
        description="created by the SDK tests",
    )
    try:
        assert isinstance(created, Subscriber)
        assert created.topic == pattern
        assert created.target_url == "http://127.0.0.1:9/hook/:id"
        assert created.filter_expression == "body.total > 100"
        assert created.description == "created by the SDK tests"
        assert created.enabled is True
        assert created.secret and created.secret.startswith("whsec_")

        fetched = admin.subscribers.get(created.id)
        assert fetched.id == created.id
        assert fetched.topic == pattern

        listed = admin.subscribers.list(topic=pattern)
        assert [s.id for s in listed] == [created.id]
        assert created.id in [s.id for s in admin.subscribers.list()]

        updated = admin.subscribers.update(created.id, enabled=False, description="changed")
        assert updated.enabled is False
        assert updated.description == "changed"
        assert updated.filter_expression == "body.total > 100"
        assert admin.subscribers.get(created.id).enabled is False

        cleared = admin.subscribers.update(created.id, filter_expression=None, enabled=True)
        assert cleared.filter_expression in (None, "")
        assert cleared.enabled is True

        with pytest.raises(InvalidRequestError):
            admin.subscribers.update(created.id, filter_expression="body.total >")

        rotated = admin.subscribers.rotate_secret(created.id)
        assert rotated.id == created.id
        assert rotated.secret and rotated.secret.startswith("whsec_")
        assert rotated.secret != created.secret
        assert admin.subscribers.get(created.id).secret == rotated.secret

        own = admin.subscribers.create(
            topic, "http://127.0.0.1:9/x", secret="whsec_" + "QUJD" * 8, enabled=False
        )
        assert own.secret == "whsec_" + "QUJD" * 8
        assert own.enabled is False
        admin.subscribers.delete(own.id)
    finally:
        admin.subscribers.delete(created.id)

    with pytest.raises(NotFoundError) as info:
        admin.subscribers.get(created.id)
    assert info.value.code == "not_found"


@needs_hub
def test_create_subscriber_with_bad_filter_is_refused(admin: Client, topic: str) -> None:
    with pytest.raises(InvalidRequestError):
        admin.subscribers.create(topic, "http://127.0.0.1:9/", filter_expression="body.total >")


@needs_hub
def test_test_filter(admin: Client, topic: str) -> None:
    message = {"topic": topic, "body": {"total": 150, "user": {"id": 7}}, "path_params": {"id": "42"}}
    assert admin.test_filter("body.total > 100", message) is True
    assert admin.test_filter("body.total > 1000", message) is False
    assert admin.test_filter('body.user.id == 7 && path_params.id == "42"', message) is True
    assert admin.test_filter("body.missing == 1", message) is False
    assert admin.test_filter("true", message) is True
    with pytest.raises(InvalidRequestError) as info:
        admin.test_filter("body.total >", message)
    assert info.value.status == 400


@needs_hub
def test_deliveries_iterator_and_page(admin: Client) -> None:
    deliveries = list(itertools.islice(admin.iter_deliveries(page_size=5), 25))
    assert isinstance(deliveries, list)
    for d in deliveries:
        assert isinstance(d, Delivery)
        assert d.outcome in ("delivered", "failed", "dead")
        assert isinstance(d.attempt, int) and d.attempt >= 1
    ids = [d.id for d in deliveries]
    assert len(set(map(str, ids))) == len(ids)

    page = admin.list_deliveries(limit=2)
    assert isinstance(page, DeliveryPage)
    assert len(page.items) <= 2

    letters = admin.list_dead_letters()
    assert isinstance(letters, list)
    assert all(isinstance(letter, DeadLetter) for letter in letters)


@needs_hub
def test_webhook_is_delivered_signed(
    admin: Client, new_subscriber: NewSubscriber, receiver: Receiver, topic: str
) -> None:
    sub = new_subscriber(topic, receiver.url + "/hook/:id", description="sdk receiver")
    assert sub.secret
    admin.refresh()
    body = {"id": 42, "total": 9.5, "note": "café", "items": [1, 2]}
    result = admin.publish(
        topic, body, headers={"X-Trace": "abc"}, query_params={"source": "web"},
        path_params={"id": "42"},
    )
    assert result.matched == 1

    req = receiver.wait("/hook/")[0]
    assert req.method == "POST"
    assert req.path == "/hook/42?source=web"
    assert verify_webhook(sub.secret, req.headers, req.body) == body
    assert req.headers["webhook-id"] == result.message_id
    assert req.headers["x-switch-topic"] == topic
    assert req.headers["x-switch-author"] == AUTHOR
    assert req.headers["x-switch-attempt"] == "1"
    assert req.headers["x-trace"] == "abc"
    assert req.headers["content-type"].startswith("application/json")

    with pytest.raises(WebhookVerificationError):
        verify_webhook(sub.secret, req.headers, req.body + b" ")
    rotated = admin.subscribers.rotate_secret(sub.id)
    assert rotated.secret is not None
    with pytest.raises(WebhookVerificationError):
        verify_webhook(rotated.secret, req.headers, req.body)

    def delivered() -> Any:
        return [
            d for d in admin.iter_deliveries(message_id=result.message_id, page_size=10)
            if d.outcome == "delivered"
        ] or None

    [attempt] = wait_for(delivered, what="the delivery to be recorded")
    assert str(attempt.subscriber_id) == str(sub.id)
    assert attempt.message_id == result.message_id
    assert attempt.attempt == 1
    assert attempt.http_status == 200
    newer = list(admin.iter_deliveries(message_id=result.message_id, since=attempt.id))
    assert all(str(d.id) != str(attempt.id) for d in newer)


@needs_hub
def test_gone_makes_a_dead_letter_that_replays(
    admin: Client, new_subscriber: NewSubscriber, receiver: Receiver, topic: str
) -> None:
    receiver.statuses["/gone"] = 410
    sub = new_subscriber(topic, receiver.url + "/gone")
    admin.refresh()
    result = admin.publish(topic, {"n": 1})
    assert result.matched == 1
    receiver.wait("/gone")

    def dead_letter() -> Any:
        return next(
            (d for d in admin.list_dead_letters(subscriber_id=sub.id)
             if d.message_id == result.message_id),
            None,
        )

    letter = wait_for(dead_letter, what="the dead letter")
    assert isinstance(letter, DeadLetter)
    assert str(letter.subscriber_id) == str(sub.id)
    assert letter.replayed_at is None
    assert admin.subscribers.get(sub.id).enabled is False

    receiver.statuses["/gone"] = 200
    admin.subscribers.update(sub.id, enabled=True)
    admin.refresh()
    admin.replay_dead_letter(letter.id)
    replayed = receiver.wait("/gone", count=2)[1]
    assert replayed.headers["webhook-id"] == result.message_id
    assert verify_webhook(sub.secret or "", replayed.headers, replayed.body) == {"n": 1}

    after = next(d for d in admin.list_dead_letters(subscriber_id=sub.id) if d.id == letter.id)
    assert after.replayed_at
    admin.replay_dead_letters(sub.id)  # replaying "all of them" is accepted too


@needs_hub
@pytest.mark.asyncio
async def test_async_client(hub_url: str, hub_secret: str, topic: str, receiver: Receiver) -> None:
    async with AsyncClient(
        hub_url, jwt_secret=hub_secret, author=AUTHOR, scope="publish admin"
    ) as client:
        assert await client.ping() is True
        sub = await client.subscribers.create(topic, receiver.url + "/async")
        try:
            await client.refresh()
            result = await client.publish(topic, {"async": True}, idempotency_key=str(uuid.uuid4()))
            assert isinstance(result, PublishResult)
            assert result.matched == 1
            assert (await client.subscribers.get(sub.id)).id == sub.id
            assert sub.id in [s.id for s in await client.subscribers.list(topic=topic)]
            assert await client.test_filter("body.async == true", {"topic": topic, "body": {"async": True}})

            count = 0
            async for d in client.iter_deliveries(page_size=5):
                assert isinstance(d, Delivery)
                count += 1
                if count >= 10:
                    break
            assert isinstance(await client.list_dead_letters(), list)

            deadline = asyncio.get_running_loop().time() + 20
            while not receiver.received("/async"):
                assert asyncio.get_running_loop().time() < deadline, "no webhook within 20 s"
                await asyncio.sleep(0.2)
        finally:
            await client.subscribers.delete(sub.id)

    req = receiver.received("/async")[0]
    assert verify_webhook(sub.secret or "", req.headers, req.body) == {"async": True}
    assert req.headers["webhook-id"] == result.message_id

    async with AsyncClient(hub_url, jwt_secret="wrong", author=AUTHOR) as client:
        with pytest.raises(UnauthorizedError):
            await client.publish(topic)


# --- message log, explain, batch publish ----------------------------------------------------

#: Messages reach the log within about 2 s of their publish; allow for a slow machine.
ARCHIVE_WAIT = 10.0


def _logged(admin: Client, count: int, **filters: Any) -> List[Message]:
    """The first ``count`` logged messages matching ``filters``, once they are all there."""
    return wait_for(
        lambda: (lambda got: got if len(got) >= count else None)(
            list(admin.messages.list(**filters))
        ),
        timeout=ARCHIVE_WAIT,
        what=f"{count} message(s) in the log ({filters})",
    )


@needs_hub
def test_message_log_lists_in_publish_order_and_polls_from_next_since(
    admin: Client, topic: str
) -> None:
    published = [admin.publish(topic, {"n": n}, headers={"X-N": str(n)}) for n in range(5)]
    logged = _logged(admin, 5, topic=topic, limit=2)  # three pages of at most 2
    assert [m.id for m in logged] == [p.message_id for p in published]
    for n, message in enumerate(logged):
        assert isinstance(message, Message)
        assert message.topic == topic
        assert message.body == {"n": n}
        assert message.headers == {"X-N": str(n)}
        assert message.author == AUTHOR
        assert message.http_method == "POST"
        assert message.matched == 0
        assert message.created_at and message.created_at.endswith("Z")
        assert message.deliveries is None

    # A pattern, an author, and time bounds select the same messages.
    pattern = topic.rsplit(".", 1)[0] + ".*"
    assert [m.id for m in admin.messages.list(topic=pattern, author=AUTHOR)] == [
        m.id for m in logged
    ]
    assert [m.id for m in admin.messages.list(topic=topic, author="someone-else")] == []
    first = datetime.fromisoformat((logged[0].created_at or "").replace("Z", "+00:00"))
    later = [m.id for m in admin.messages.list(topic=topic, after=first)]
    assert later == [m.id for m in logged if m.created_at != logged[0].created_at]
    assert list(admin.messages.list(topic=topic, before=logged[0].created_at)) == []

    # Polling: the iterator's cursor yields only what is logged after it.
    it = admin.messages.list(topic=topic)
    assert len(list(it)) == 5
    cursor = it.next_since
    assert cursor is not None
    assert list(admin.messages.list(topic=topic, since=cursor)) == []
    newer = admin.publish(topic, {"n": 5})
    polled = _logged(admin, 1, topic=topic, since=cursor)
    assert [m.id for m in polled] == [newer.message_id]

    page = admin.messages.page(topic=topic, limit=2)
    assert isinstance(page, MessagePage)
    assert [m.id for m in page.items] == [m.id for m in logged[:2]]
    rest = admin.messages.page(topic=topic, since=page.next_since, limit=1000)
    assert [m.id for m in rest.items] == [m.id for m in logged[2:]] + [newer.message_id]
    assert admin.messages.page(topic=topic, since=rest.next_since).items == []


@needs_hub
def test_message_with_its_deliveries(
    admin: Client, new_subscriber: NewSubscriber, receiver: Receiver, topic: str
) -> None:
    sub = new_subscriber(topic, receiver.url + "/log")
    admin.refresh()
    result = admin.publish(topic, {"total": 7}, path_params={"id": "7"})
    assert result.matched == 1
    receiver.wait("/log")

    def delivered() -> Any:
        try:
            message = admin.messages.get(result.message_id)
        except NotFoundError:
            return None
        states = [d.state for d in message.deliveries or []]
        return message if states == ["delivered"] else None

    message = wait_for(delivered, timeout=ARCHIVE_WAIT, what="the delivered message in the log")
    assert message.id == result.message_id
    assert message.topic == topic
    assert message.body == {"total": 7}
    assert message.path_params == {"id": "7"}
    assert message.matched == 1
    [delivery] = message.deliveries or []
    assert isinstance(delivery, MessageDelivery)
    assert str(delivery.subscriber_id) == str(sub.id)
    assert delivery.attempts == 1
    assert delivery.last_http_status == 200

    with pytest.raises(NotFoundError) as info:
        admin.messages.get("msg_does_not_exist")
    assert info.value.status == 404
    assert info.value.code == "not_found"


@needs_hub
def test_explain_reports_filters_and_missing_variables(
    admin: Client, new_subscriber: NewSubscriber, topic: str
) -> None:
    every = new_subscriber(topic, "http://127.0.0.1:9/every")
    big = new_subscriber(topic, "http://127.0.0.1:9/big", filter_expression="body.total > 100")
    off = new_subscriber(topic, "http://127.0.0.1:9/off", enabled=False)
    admin.refresh()

    explained = admin.explain(topic, {"note": "no total"})
    assert isinstance(explained, Explanation)
    assert [str(i) for i in explained.matched] == [str(every.id)]
    by_id = {str(s.id): s for s in explained.subscribers}
    assert set(by_id) == {str(every.id), str(big.id), str(off.id)}
    assert by_id[str(every.id)].matched is True
    assert by_id[str(every.id)].reason == "matched"
    assert by_id[str(big.id)].matched is False
    assert by_id[str(big.id)].reason == "filter_false"
    assert by_id[str(big.id)].missing == ["body.total"]
    assert by_id[str(off.id)].reason == "disabled"

    dry = admin.publish(topic, {"total": 150}, dry_run=True)
    assert isinstance(dry, Explanation)
    assert sorted(str(i) for i in dry.matched) == sorted([str(every.id), str(big.id)])
    entry = dry.subscriber(big.id)
    assert entry is not None and entry.reason == "matched" and entry.missing == []

    # A token with scope publish only may explain too.
    with Client(admin.base_url, token=sign_token(HUB_SECRET, author=AUTHOR, scope="publish")) as c:
        assert [str(i) for i in c.explain(topic).matched] == [str(every.id)]


@needs_hub
def test_publish_batch_all_or_nothing(
    admin: Client, new_subscriber: NewSubscriber, topic: str
) -> None:
    base = topic.rsplit(".", 1)[0]
    with pytest.raises(InvalidRequestError) as info:
        admin.publish_batch([
            {"topic": f"{base}.refused", "body": {"n": 0}},
            {"topic": "not a topic!", "body": {"n": 1}},
            {"topic": f"{base}.refused"},
        ])
    assert info.value.index == 1
    assert info.value.status == 400
    assert info.value.code == "invalid_request"

    new_subscriber(f"{base}.ok", "http://127.0.0.1:9/batch", filter_expression="body.n > 0")
    admin.refresh()
    results = admin.publish_batch([
        {"topic": f"{base}.ok", "body": {"n": 0}},
        {"topic": f"{base}.ok", "body": {"n": 1}, "headers": {"X-Trace": "b"}},
        {"topic": f"{base}.ok", "body": {"n": 2}, "http_method": "put"},
    ])
    assert [r.matched for r in results] == [0, 1, 1]
    assert len({r.message_id for r in results}) == 3
    assert all(isinstance(r, PublishResult) and not r.duplicate for r in results)

    logged = _logged(admin, 3, topic=f"{base}.#")
    assert [m.id for m in logged] == [r.message_id for r in results]
    assert [m.body for m in logged] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert logged[1].headers == {"X-Trace": "b"}
    assert logged[2].http_method == "PUT"
    assert all(m.topic == f"{base}.ok" for m in logged), "the refused batch logged nothing"

    with pytest.raises(InvalidRequestError) as info:
        admin.publish_batch([])
    assert info.value.index is None


# --- ordering keys ---------------------------------------------------------------------------


def _logged_message(admin: Client, message_id: str) -> Message:
    """``GET /messages/{id}`` once the message is in the log."""

    def probe() -> Any:
        try:
            return admin.messages.get(message_id)
        except NotFoundError:
            return None

    return wait_for(probe, timeout=ARCHIVE_WAIT, what=f"message {message_id} in the log")


@needs_hub
def test_ordering_key_is_kept_and_delivered_in_order(
    admin: Client, new_subscriber: NewSubscriber, receiver: Receiver, topic: str
) -> None:
    sub = new_subscriber(topic, receiver.url + "/ordered")
    admin.refresh()
    key = "customer-42 ✓"
    explained = admin.explain(topic, {"n": 0}, ordering_key=key)
    assert [str(i) for i in explained.matched] == [str(sub.id)]

    keyed = [admin.publish(topic, {"n": n}, ordering_key=key) for n in range(4)]
    assert all(r.matched == 1 and r.spooled is False and not r.duplicate for r in keyed)
    plain = admin.publish(topic, {"n": 4})
    assert plain.spooled is False
    longest = "é" * 127 + "x"  # 255 bytes in UTF-8: the most the hub takes
    at_limit = admin.publish(topic, {"n": 5}, ordering_key=longest)

    for result in keyed:
        message = _logged_message(admin, result.message_id)
        assert message.ordering_key == key
        assert message.raw["ordering_key"] == key
    assert _logged_message(admin, plain.message_id).ordering_key is None
    assert _logged_message(admin, at_limit.message_id).ordering_key == longest

    # One subscriber, one key: delivered one at a time, in publish order.
    received = receiver.wait("/ordered", count=6)
    order = [json.loads(r.body)["n"] for r in received]
    assert [n for n in order if n < 4] == [0, 1, 2, 3]


@needs_hub
def test_bad_ordering_key_is_refused_by_the_sdk_as_by_the_hub(
    admin: Client, hub_url: str, hub_secret: str, topic: str
) -> None:
    token = sign_token(hub_secret, author=AUTHOR, scope="publish")
    for key in ["", "x" * 256, "é" * 128, "a\nb", "del\x7f", "c1\x85"]:
        with pytest.raises(ValueError, match="ordering_key"):
            admin.publish(topic, ordering_key=key)
        # The same body sent without the SDK's check: the hub refuses it too.
        answer = httpx.post(
            f"{hub_url}/publish",
            json={"topic": topic, "ordering_key": key},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10.0,
        )
        assert answer.status_code == 400, (key, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
    assert list(admin.messages.list(topic=topic)) == []


@needs_hub
def test_publish_batch_with_ordering_keys(admin: Client, topic: str) -> None:
    results = admin.publish_batch([
        {"topic": topic, "body": {"n": 0}, "ordering_key": "k-a"},
        {"topic": topic, "body": {"n": 1}},
        {"topic": topic, "body": {"n": 2}, "ordering_key": "k-b"},
        {"topic": topic, "body": {"n": 3}, "ordering_key": "k-a"},
    ])
    assert len(results) == 4
    assert all(isinstance(r, PublishResult) and r.spooled is False for r in results)
    logged = _logged(admin, 4, topic=topic)
    assert [m.id for m in logged] == [r.message_id for r in results]
    assert [m.ordering_key for m in logged] == ["k-a", None, "k-b", "k-a"]
    assert _logged_message(admin, results[2].message_id).ordering_key == "k-b"

    with pytest.raises(ValueError, match=r"messages\[1\]\.ordering_key"):
        admin.publish_batch([
            {"topic": topic, "ordering_key": "fine"},
            {"topic": topic, "ordering_key": "x" * 256},
        ])
    assert len(list(admin.messages.list(topic=topic))) == 4, "the refused batch sent nothing"


@needs_hub
@pytest.mark.asyncio
async def test_async_ordering_key(hub_url: str, hub_secret: str, topic: str) -> None:
    async with AsyncClient(
        hub_url, jwt_secret=hub_secret, author=AUTHOR, scope="publish admin"
    ) as client:
        result = await client.publish(topic, {"n": 1}, ordering_key="async-key")
        assert result.spooled is False
        [item] = await client.publish_batch([{"topic": topic, "ordering_key": "batch-key"}])
        assert item.spooled is False
        with pytest.raises(ValueError):
            await client.publish(topic, ordering_key="bad\tkey")

        async def logged(message_id: str) -> Message:
            deadline = asyncio.get_running_loop().time() + ARCHIVE_WAIT
            while True:
                try:
                    return await client.messages.get(message_id)
                except NotFoundError:
                    assert asyncio.get_running_loop().time() < deadline, "not logged within 10 s"
                    await asyncio.sleep(0.2)

        assert (await logged(result.message_id)).ordering_key == "async-key"
        assert (await logged(item.message_id)).ordering_key == "batch-key"


@needs_hub
def test_replay_dry_run_counts(
    admin: Client, new_subscriber: NewSubscriber, receiver: Receiver, topic: str
) -> None:
    published = [admin.publish(topic, {"total": total}) for total in (50, 150, 250)]
    logged = _logged(admin, 3, topic=topic)
    assert [m.id for m in logged] == [p.message_id for p in published]

    every = new_subscriber(topic, receiver.url + "/replay-every")
    big = new_subscriber(topic, receiver.url + "/replay-big", filter_expression="body.total > 100")
    admin.refresh()

    everything = admin.messages.replay(topic=topic, dry_run=True)
    assert everything == ReplayResult(messages=3, jobs=5, dry_run=True)
    only_big = admin.messages.replay(topic=topic, subscriber_id=big.id, dry_run=True)
    assert (only_big.messages, only_big.jobs) == (3, 2)
    after_first = admin.messages.replay(
        topic=topic, after=logged[0].created_at, subscriber_id=every.id, dry_run=True
    )
    assert after_first.jobs == after_first.messages
    assert after_first.messages == len([m for m in logged if m.created_at != logged[0].created_at])
    none = admin.messages.replay(topic=topic + ".none", dry_run=True)
    assert (none.messages, none.jobs) == (0, 0)

    with pytest.raises(NotFoundError):
        admin.messages.replay(topic=topic, subscriber_id=999_999_999, dry_run=True)

    # A real backfill of the new subscriber delivers each matching message once more.
    done = admin.messages.replay(topic=topic, subscriber_id=big.id)
    assert (done.messages, done.jobs, done.dry_run) == (3, 2, False)
    got = receiver.wait("/replay-big", count=2)
    assert sorted(r.headers["webhook-id"] for r in got) == sorted(
        p.message_id for p in published[1:]
    )
    assert receiver.received("/replay-every") == [], "dry runs enqueue nothing"


@needs_hub
@pytest.mark.asyncio
async def test_async_message_log(hub_url: str, hub_secret: str, topic: str) -> None:
    async with AsyncClient(
        hub_url, jwt_secret=hub_secret, author=AUTHOR, scope="publish admin"
    ) as client:
        results = await client.publish_batch([{"topic": topic, "body": {"n": n}} for n in range(3)])
        ids = [r.message_id for r in results]

        deadline = asyncio.get_running_loop().time() + ARCHIVE_WAIT
        while True:
            it = client.messages.list(topic=topic, limit=2)
            seen = [m async for m in it]
            if len(seen) >= 3:
                break
            assert asyncio.get_running_loop().time() < deadline, "not logged within 10 s"
            await asyncio.sleep(0.2)
        assert [m.id for m in seen] == ids
        assert [m.id async for m in client.messages.list(topic=topic, since=it.next_since)] == []
        page = await client.messages.page(topic=topic, limit=1)
        assert [m.id for m in page.items] == ids[:1]

        message = await client.messages.get(ids[0])
        assert message.body == {"n": 0} and message.deliveries == []
        replay = await client.messages.replay(topic=topic, dry_run=True)
        assert (replay.messages, replay.jobs, replay.dry_run) == (3, 0, True)
        explained = await client.explain(topic, {"n": 1})
        assert explained.matched == [] and explained.subscribers == []
        assert await client.publish(topic, dry_run=True) == explained

        with pytest.raises(InvalidRequestError) as info:
            await client.publish_batch([{"topic": topic}, {"topic": topic, "http_method": "TRACE"}])
        assert info.value.index == 1
        with pytest.raises(NotFoundError):
            await client.messages.get("msg_does_not_exist")
