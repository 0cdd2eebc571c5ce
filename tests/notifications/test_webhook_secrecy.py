"""A webhook URL's path and query hold its token (chat services put it there): real ``crmsync notify`` runs, as
subprocesses, name a webhook by its id and host only, on stdout and stderr, for good input and bad."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from worker import keys
from worker.notifications.channels import webhook_id

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
SLACK = "https://hooks.slack.com/services/T0000SEKRIT/B0000SEKRIT/XXXXSEKRITXXXX"
TEAMS = "https://example.webhook.office.com/webhookb2/SEKRIT@SEKRIT/IncomingWebhook/SEKRIT?sig=SEKRIT"


def crmsync(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([CRMSYNC, *args], capture_output=True, text=True, env=dict(os.environ), timeout=60,
                          check=False)
    for stream in (done.stdout, done.stderr):
        assert "SEKRIT" not in stream
        assert "/services" not in stream
        assert "/webhookb2" not in stream
        assert "Traceback" not in stream
    return done


def test_add_show_and_remove_print_host_and_id_only(redis_client: redis.Redis) -> None:
    slack, teams = webhook_id(SLACK), webhook_id(TEAMS)
    added = crmsync("notify", "webhook", "add", SLACK)
    assert (added.returncode, added.stdout) == (0, f"webhook {slack} (hooks.slack.com) added\n")
    assert crmsync("notify", "webhook", "add", TEAMS).returncode == 0

    shown = crmsync("notify", "show")
    assert shown.returncode == 0
    assert f"webhook     {slack}  hooks.slack.com\n" in shown.stdout
    assert f"webhook     {teams}  example.webhook.office.com\n" in shown.stdout
    listed = json.loads(crmsync("notify", "show", "--json").stdout)["webhooks"]
    assert [(h["id"], h["host"]) for h in listed] == [(slack, "hooks.slack.com"),
                                                      (teams, "example.webhook.office.com")]

    removed = crmsync("notify", "webhook", "remove", SLACK)
    assert (removed.returncode, removed.stdout) == (0, f"webhook {slack} (hooks.slack.com) removed\n")
    again = crmsync("notify", "webhook", "remove", SLACK)
    assert again.returncode == 2
    assert len(again.stderr.strip().splitlines()) == 1
    assert "no such webhook" in again.stderr
    # What the CLI never prints is still what it stores: the worker posts to the full URL.
    assert "SEKRIT" in json.dumps(redis_client.hgetall(keys.NOTIFY_CONFIG))


@pytest.mark.parametrize("url", [SLACK.replace("https", "ftp"), SLACK.replace(".com/", ".com:99999/"),
                                 SLACK.removeprefix("https://"), SLACK.replace(".com/", ".com /")])
def test_refused_urls_exit_2_with_one_line_that_holds_no_token(redis_client: redis.Redis, url: str) -> None:
    refused = crmsync("notify", "webhook", "add", url)
    assert refused.returncode == 2
    assert refused.stdout == ""
    [line] = refused.stderr.strip().splitlines()
    assert "invalid webhook URL" in line
    assert redis_client.exists(keys.NOTIFY_CONFIG) == 0
