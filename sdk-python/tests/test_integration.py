"""Against a real running hub and worker (skipped when SWITCH_TEST_URL is unset)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any, Callable

import pytest

from switch_sdk import (
    AsyncClient,
    Client,
    DeadLetter,
    Delivery,
    DeliveryPage,
    ForbiddenError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    PublishResult,
    Subscriber,
    UnauthorizedError,
    WebhookVerificationError,
    verify_webhook,
)

from .conftest import Receiver, free_port, needs_hub, wait_for

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
