"""RELAY_API_KEYS: named keys, the older unnamed form, and errors that never contain a key."""

from __future__ import annotations

import pytest

from shared.apikeys import ApiKey, ApiKeyError, Role, parse_api_keys, tenant_names


def test_named_unnamed_and_blank_entries() -> None:
    keys = parse_api_keys(" ci:k-ci , ,legacy-key, web : k-web ")
    assert keys == [ApiKey("ci", "k-ci"), ApiKey("key2", "legacy-key"), ApiKey("web", "k-web")]
    assert "k-ci" not in repr(keys)  # keys stay out of reprs (and so out of logs)


def test_unnamed_keys_are_named_by_position() -> None:
    assert [k.name for k in parse_api_keys("a,b,c")] == ["key1", "key2", "key3"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("ci:s3cr3t-1,web:s3cr3t-1", "key is used twice"),
        ("s3cr3t-1,key1:s3cr3t-2", "used twice"),  # a positional name never joins an explicit one
        ("ci:", "the key is empty"),
        ("bad name:s3cr3t-1", "a name is"),
        ("anonymous:s3cr3t-1", "reserved"),
        ("key2:s3cr3t-1,s3cr3t-2", "used twice"),  # the unnamed second key is named key2 too
    ],
)
def test_bad_entries_are_refused_without_showing_the_key(raw: str, problem: str) -> None:
    with pytest.raises(ApiKeyError, match=problem) as caught:
        parse_api_keys(raw)
    assert "s3cr3t" not in str(caught.value)


def test_roles_and_a_tenant_with_several_keys() -> None:
    # A tenant's keys share its name (rotation, a read-only key next to a submitting one); the role is a third part.
    keys = parse_api_keys("web:k-1,web:k-2:read,ops:k-3:admin,ci:k-4:submit,odd:k:5")
    assert [(k.name, k.secret, k.role) for k in keys] == [
        ("web", "k-1", Role.SUBMIT),
        ("web", "k-2", Role.READ),
        ("ops", "k-3", Role.ADMIN),
        ("ci", "k-4", Role.SUBMIT),
        ("odd", "k:5", Role.SUBMIT),  # as before: a named key may contain ':' (unless it ends in a role)
    ]
    assert tenant_names(keys) == ["web", "ops", "ci", "odd"]
