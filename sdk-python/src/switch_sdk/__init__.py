"""Python publisher SDK for Switch, the self-hosted webhook fan-out hub.

>>> from switch_sdk import Client
>>> with Client("http://127.0.0.1:8080", api_key="sk_…") as client:
...     result = client.publish("orders.created", {"id": 42})
"""

from ._version import __version__
from .async_client import (
    AsyncClient,
    AsyncKeys,
    AsyncMessageIterator,
    AsyncMessages,
    AsyncMessageStream,
    AsyncSubscribers,
)
from .auth import sign_token
from .client import Client, Keys, MessageIterator, Messages, MessageStream, Subscribers
from .errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    PayloadTooLargeError,
    SwitchError,
    UnauthorizedError,
    UnavailableError,
    WebhookVerificationError,
)
from .models import (
    ApiKey,
    DeadLetter,
    Delivery,
    DeliveryPage,
    ExplainedSubscriber,
    Explanation,
    Id,
    Message,
    MessageDelivery,
    MessagePage,
    PublishResult,
    ReplayResult,
    Subscriber,
)
from .webhooks import sign_webhook, verify_webhook

__all__ = [
    "__version__",
    "AsyncClient",
    "AsyncSubscribers",
    "AsyncKeys",
    "AsyncMessages",
    "AsyncMessageIterator",
    "AsyncMessageStream",
    "Client",
    "Subscribers",
    "Keys",
    "Messages",
    "MessageIterator",
    "MessageStream",
    "sign_token",
    "verify_webhook",
    "sign_webhook",
    "PublishResult",
    "ApiKey",
    "Subscriber",
    "Delivery",
    "DeliveryPage",
    "DeadLetter",
    "Message",
    "MessageDelivery",
    "MessagePage",
    "ReplayResult",
    "Explanation",
    "ExplainedSubscriber",
    "Id",
    "SwitchError",
    "NetworkError",
    "InvalidRequestError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "UnavailableError",
    "WebhookVerificationError",
]
