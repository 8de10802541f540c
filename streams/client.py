"""Client of the profiles app's HTTP lookup (`mmfeat profile`, the demo, the tests)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from mmfeat.errors import MmfeatError, ServiceError
from mmfeat.schemas import UserProfileV1


class UnknownUser(MmfeatError):
    """The lookup answered 404: no engagement of this user has been applied."""


def fetch_profile(base_url: str, user_id: str, timeout_s: float = 5.0) -> UserProfileV1:
    url = f"{base_url.rstrip('/')}/profiles/{urllib.parse.quote(user_id, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return UserProfileV1.model_validate_json(resp.read())
    except urllib.error.HTTPError as e:
        detail = json.loads(e.read() or b"{}").get("error", e.reason)
        if e.code == 404:
            raise UnknownUser(f"{url}: {detail}") from e
        raise ServiceError(f"{url}: HTTP {e.code}: {detail}") from e
    except (urllib.error.URLError, OSError) as e:
        raise ServiceError(f"{url}: the profiles app is not answering ({e}); start it with `mmfeat profiles`") from e
