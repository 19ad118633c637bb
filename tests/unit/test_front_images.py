"""Unit: images for runtime-backend workers (issue 16 item 2) — they travel with their user
message in every API, bytes go anywhere, URL-only images go to the cloud (or are fetched), and
the fetch's address policy."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from front.backends import RequestForms
from front.errors import ApiError, ErrorKind
from front.image_fetch import ImageFetcher, fetch_url_images, is_public
from protocol.chat import ImageInput
from protocol.vocabulary import Backend
from tests.unit.test_front_cloud import GIF, PNG, anthropic, chat, image_part, link, responses

pytestmark = pytest.mark.unit

DATA = ImageInput(media_type="image/png", data_b64=PNG)


def test_every_api_keeps_images_on_the_user_message() -> None:
    openai_plan = chat(
        {
            "messages": [
                {"role": "user", "content": [image_part(f"data:image/png;base64,{PNG}")]},
                {"role": "assistant", "content": "a picture"},
                {"role": "user", "content": "what colour?"},
            ]
        }
    )
    assert [(m.role, m.text, m.images) for m in openai_plan.messages] == [
        ("user", "", [DATA]),
        ("assistant", "a picture", []),
        ("user", "what colour?", []),
    ]
    source = {"type": "base64", "media_type": "image/png", "data": PNG}
    claude_plan = anthropic(
        {
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": source}]},
            ],
        }
    )
    assert claude_plan.messages[-1].images == [DATA]
    gif_url = f"data:image/gif;base64,{GIF}"
    responses_plan = responses(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "and this"},
                        {"type": "input_image", "image_url": gif_url},
                    ],
                }
            ]
        }
    )
    [message] = responses_plan.messages
    assert message.text == "and this" and message.images[0].media_type == "image/gif"


def test_images_with_bytes_go_to_any_account_urls_only_to_the_cloud() -> None:
    runtime, cloud = link("r", Backend.RUNTIME), link("c", Backend.CLOUD)
    data_part = image_part(f"data:image/png;base64,{PNG}")
    data_plan = chat({"messages": [{"role": "user", "content": [data_part]}]})
    forms = RequestForms(data_plan, request_id="r", scope="s")
    assert forms.eligible([runtime, cloud], [runtime, cloud]) == [runtime, cloud]
    url_plan = chat({"messages": [{"role": "user", "content": [image_part("https://e.com/a")]}]})
    url_forms = RequestForms(url_plan, request_id="r", scope="s")
    assert url_forms.eligible([runtime, cloud], [runtime, cloud]) == [cloud]
    with pytest.raises(ApiError, match="fetch_image_urls") as caught:
        url_forms.eligible([runtime], [runtime])
    assert caught.value.kind is ErrorKind.BAD_REQUEST


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1::1", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared (CGNAT)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:93.184.216.34", True),
        ("2002:7f00:1::1", False),  # 6to4 around 127.0.0.1
    ],
)
def test_only_public_addresses_are_fetched_from(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


class FakeFetcher(ImageFetcher):
    def __init__(self) -> None:
        super().__init__(1.0)
        self.asked: list[str] = []

    async def fetch(self, url: str, param: str) -> ImageInput:
        self.asked.append(url)
        if "bad" in url:
            raise ApiError(ErrorKind.BAD_REQUEST, "refused", param=param)
        return DATA


def test_fetched_images_replace_the_urls_in_both_forms() -> None:
    url = "https://e.com/a.png"
    plan = chat(
        {
            "messages": [
                {"role": "user", "content": [image_part(url), image_part(url)]},
                {"role": "user", "content": [image_part(f"data:image/gif;base64,{GIF}")]},
            ]
        }
    )
    fetcher = FakeFetcher()
    asyncio.run(fetch_url_images(plan, fetcher, budget_bytes=1024))
    assert fetcher.asked == [url]  # once per distinct URL
    assert plan.turns[0].images == [DATA, DATA] and plan.messages[0].images == [DATA, DATA]
    assert plan.turns[1].images[0].media_type == "image/gif"
    broken = chat({"messages": [{"role": "user", "content": [image_part("https://bad/x")]}]})
    with pytest.raises(ApiError, match="refused"):
        asyncio.run(fetch_url_images(broken, FakeFetcher(), budget_bytes=1024))
    many = chat({"messages": [{"role": "user", "content": [image_part(url)] * 8}]})
    with pytest.raises(ApiError, match="max_body_bytes") as caught:
        asyncio.run(fetch_url_images(many, FakeFetcher(), budget_bytes=4 * len(PNG)))
    assert caught.value.kind is ErrorKind.TOO_LARGE
