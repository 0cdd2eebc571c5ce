"""``crmsync notify ...``: where notifications go (webhooks and email; log and stream are always on).

A webhook URL is read from the command line and stored; it is never printed back: chat services put their
token in its path or query, so every output names a webhook by its id and host only.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from quota.errors import InvalidInput
from worker.cli import Subcommands, add_command
from worker.cli.support import cli_redis
from worker.notifications.channels import Channels, ChannelStore, EmailSettings, password_ref

__all__ = ["register"]


def _cmd_webhook_add(args: argparse.Namespace) -> int:
    with cli_redis("Redis") as client:
        hook = ChannelStore(client).add_webhook(args.url)
    print(f"{hook.name} added")
    return 0


def _cmd_webhook_remove(args: argparse.Namespace) -> int:
    with cli_redis("Redis") as client:
        removed = ChannelStore(client).remove_webhook(args.url)
    if removed is None:
        raise InvalidInput("no such webhook: give its URL or its id as `crmsync notify show` lists it")
    print(f"{removed.name} removed")
    return 0


def _cmd_email_set(args: argparse.Namespace) -> int:
    recipients = tuple(a.strip() for a in args.to.split(",") if a.strip())
    settings = EmailSettings(host=args.host, port=_port(args.port), sender=args.sender, recipients=recipients,
                             starttls=args.starttls, username=args.username,
                             password_ref=password_ref(args.password_file, args.password_env))
    with cli_redis("Redis") as client:
        ChannelStore(client).set_email(settings)
    print(f"email: {settings.host}:{settings.port} from {settings.sender} to {', '.join(recipients)}")
    return 0


def _port(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise InvalidInput(f"invalid SMTP port {value!r}: use a whole number from 1 to 65535")
    return int(value)


def _cmd_email_clear(args: argparse.Namespace) -> int:
    with cli_redis("Redis") as client:
        cleared = ChannelStore(client).clear_email()
    print("email delivery turned off" if cleared else "email delivery was not set")
    return 0


def channels_dict(channels: Channels) -> dict[str, Any]:
    """The channel config as shown: webhooks by id and host, the SMTP password only as its reference."""
    return {
        "always": ["log", "stream"],
        "webhooks": [{"id": w.id, "host": w.host, "added_at": w.added_at.isoformat()} for w in channels.webhooks],
        "email": channels.email.to_json() if channels.email else None,
    }


def _cmd_show(args: argparse.Namespace) -> int:
    with cli_redis("Redis") as client:
        shown = channels_dict(ChannelStore(client).load())
    if args.json:
        print(json.dumps(shown))
        return 0
    print("log, stream  always on")
    for hook in shown["webhooks"]:
        print(f"webhook     {hook['id']}  {hook['host']}")
    email = shown["email"]
    if email:
        login = f", login {email['username']} (password from {email['password_ref']})" if email["username"] else ""
        tls = ", STARTTLS" if email["starttls"] else ""
        print(f"email       {email['host']}:{email['port']} from {email['from']} to {', '.join(email['to'])}"
              f"{tls}{login}")
    if not shown["webhooks"] and not email:
        print("no webhook or email: add one with `crmsync notify webhook add URL` or `crmsync notify email set`")
    return 0


def register(commands: Subcommands) -> None:
    """Add the ``notify`` command."""
    notify = add_command(commands, "notify")
    sub = notify.add_subparsers(dest="notify_command", required=True, metavar="ACTION")

    webhook = sub.add_parser("webhook", help="add or remove a webhook (JSON POST of each notification)")
    hooks = webhook.add_subparsers(dest="webhook_command", required=True, metavar="ACTION")
    add = hooks.add_parser("add", help="add a webhook URL (http or https)")
    add.add_argument("url")
    add.set_defaults(handler=_cmd_webhook_add)
    remove = hooks.add_parser("remove", help="remove a webhook by URL or id")
    remove.add_argument("url", metavar="URL_OR_ID")
    remove.set_defaults(handler=_cmd_webhook_remove)

    email = sub.add_parser("email", help="set or clear email delivery over SMTP")
    mail = email.add_subparsers(dest="email_command", required=True, metavar="ACTION")
    set_ = mail.add_parser("set", help="send each notification by email (replaces the current settings)")
    set_.add_argument("--host", required=True, help="SMTP server host")
    set_.add_argument("--port", required=True, help="SMTP server port (1-65535)")
    set_.add_argument("--from", dest="sender", required=True, metavar="ADDR", help="sender address")
    set_.add_argument("--to", required=True, metavar="ADDR[,ADDR]", help="recipient addresses, comma-separated")
    set_.add_argument("--starttls", action="store_true", help="upgrade the connection with STARTTLS")
    set_.add_argument("--username", help="SMTP login (with --password-file or --password-env)")
    password = set_.add_mutually_exclusive_group()
    password.add_argument("--password-file", metavar="FILE", help="file holding the SMTP password")
    password.add_argument("--password-env", metavar="NAME",
                          help="environment variable holding the SMTP password (must be set for the worker too)")
    set_.set_defaults(handler=_cmd_email_set)
    clear = mail.add_parser("clear", help="turn email delivery off")
    clear.set_defaults(handler=_cmd_email_clear)

    show = sub.add_parser("show", help="the channels notifications go to (webhooks by id and host; never a "
                                       "password)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_cmd_show)
