"""The outbox worker against a real local SMTP server (aiosmtpd) and the real PostgreSQL."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest

from gateway.store.outbox import enqueue
from providers.errors import ProviderError
from providers.fakes.smtp import FakeSmtp
from providers.mail import OutboxWorker, SmtpTarget, parse_smtp_url

PASSWORD = "sm7p-pass-word-never-logged"
FROM = "AI Receptionist <no-reply@receptionist.test>"


@pytest.fixture
async def pool(database_url):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    await pool.execute("TRUNCATE outbox")
    yield pool
    await pool.close()


@pytest.fixture
async def smtp():
    fake = await FakeSmtp(username="mailer", password=PASSWORD).start()
    yield fake
    await fake.stop()


async def add(pool, n: int = 1, to: str = "ada@example.com") -> list[int]:
    async with pool.acquire() as conn:
        return [await enqueue(conn, None, "welcome", to, f"Welcome {i}", f"Hello number {i}.\nSee you soon.")
                for i in range(n)]


async def row(pool, id_: int):
    return await pool.fetchrow(
        "SELECT *, isfinite(next_attempt_at) AS finite, CASE WHEN isfinite(next_attempt_at) "
        "THEN EXTRACT(EPOCH FROM next_attempt_at - now())::float8 END AS wait FROM outbox WHERE id = $1", id_)


async def test_delivered_and_marked_sent(pool, smtp):
    [id_] = await add(pool)
    worker = OutboxWorker(pool, smtp.url, FROM)
    assert await worker.deliver_due() == 1
    [mail] = smtp.messages
    assert mail.to == ("ada@example.com",) and mail.mail_from == "no-reply@receptionist.test"
    assert mail.subject == "Welcome 0" and mail.body.strip() == "Hello number 0.\nSee you soon."
    assert mail.headers["From"] == FROM and mail.headers["To"] == "ada@example.com"
    assert mail.message_id.startswith(f"<outbox.{id_}.") and mail.message_id.endswith("@receptionist.test>")
    r = await row(pool, id_)
    assert r["sent_at"] is not None and r["attempts"] == 1 and r["last_error"] is None
    assert await worker.deliver_due() == 0 and len(smtp.messages) == 1  # sent once, not again


async def test_display_name_recipient_gets_a_bare_envelope_address(pool, smtp):
    await add(pool, 1, to="Ada Lovelace <ada@example.com>")
    assert await OutboxWorker(pool, smtp.url, FROM).deliver_due() == 1
    [mail] = smtp.messages
    assert mail.to == ("ada@example.com",) and mail.headers["To"] == "Ada Lovelace <ada@example.com>"


async def test_smtp_down_records_backoff_then_delivers_when_back(pool, smtp):
    ids = await add(pool, 2)
    await smtp.stop()
    worker = OutboxWorker(pool, smtp.url, FROM, timeout=2)
    assert await worker.deliver_due() == 0
    for id_ in ids:
        r = await row(pool, id_)
        assert r["sent_at"] is None and r["attempts"] == 1
        assert "could not reach the SMTP server" in r["last_error"] and PASSWORD not in r["last_error"]
        assert 4 < r["wait"] <= 5  # first backoff: 5 s
    assert await worker.deliver_due() == 0  # not due yet: no early retry
    assert (await row(pool, ids[0]))["attempts"] == 1

    await pool.execute("UPDATE outbox SET next_attempt_at = now()")  # five seconds pass
    assert await worker.deliver_due() == 0
    r = await row(pool, ids[0])
    assert r["attempts"] == 2 and 9 < r["wait"] <= 10  # doubled
    await pool.execute("UPDATE outbox SET attempts = 40, next_attempt_at = now()")
    await worker.deliver_due()
    assert 3599 < (await row(pool, ids[0]))["wait"] <= 3600  # capped at an hour

    await smtp.start()  # back up, on the same port
    await pool.execute("UPDATE outbox SET next_attempt_at = now()")
    assert await worker.deliver_due() == 2
    assert sorted(m.subject for m in smtp.messages) == ["Welcome 0", "Welcome 1"]
    for id_ in ids:
        assert (await row(pool, id_))["sent_at"] is not None


async def test_bad_credentials_keep_the_message_and_never_store_the_password(pool, smtp):
    [id_] = await add(pool)
    wrong = "wrong-" + PASSWORD
    worker = OutboxWorker(pool, smtp.url.replace(PASSWORD, wrong), FROM)
    assert await worker.deliver_due() == 0
    r = await row(pool, id_)
    assert r["sent_at"] is None and r["attempts"] == 1 and smtp.auth_failures >= 1  # smtplib tries PLAIN, then LOGIN
    assert r["last_error"].startswith("authentication failed: 535") and wrong not in r["last_error"]
    assert smtp.messages == []
    await pool.execute("UPDATE outbox SET next_attempt_at = now()")
    assert await OutboxWorker(pool, smtp.url, FROM).deliver_due() == 1  # fixed config: delivered


async def test_two_workers_concurrently_send_each_message_exactly_once(pool, smtp):
    ids = await add(pool, 30)
    smtp.delay = 0.01  # each DATA takes a moment, so the two workers' passes overlap
    workers = [OutboxWorker(pool, smtp.url, FROM, batch=4) for _ in range(2)]
    counts = [0, 0]

    async def drain(i: int) -> None:
        while await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
            counts[i] += await workers[i].deliver_due()

    await asyncio.wait_for(asyncio.gather(drain(0), drain(1)), 20)
    subjects = [m.subject for m in smtp.messages]
    assert sorted(subjects) == sorted(f"Welcome {i}" for i in range(30))  # each exactly once
    assert sum(counts) == 30 and all(counts), counts  # both took part
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL AND attempts = 1") == 30
    assert {int(m.message_id.split(".")[1]) for m in smtp.messages} == set(ids)


async def test_a_row_locked_by_another_process_is_skipped_not_waited_for(pool, smtp):
    first, second = await add(pool, 2)
    other = await pool.acquire()
    tx = other.transaction()
    await tx.start()
    await other.execute("SELECT id FROM outbox WHERE id = $1 FOR UPDATE", first)  # another worker mid-claim
    try:
        worker = OutboxWorker(pool, smtp.url, FROM)
        assert await asyncio.wait_for(worker.deliver_due(), 5) == 1
        assert [m.subject for m in smtp.messages] == ["Welcome 1"]
    finally:
        await tx.rollback()
        await pool.release(other)
    assert await worker.deliver_due() == 1
    assert sorted(m.subject for m in smtp.messages) == ["Welcome 0", "Welcome 1"]


async def test_claimed_rows_are_leased_and_come_back_if_the_worker_dies(pool, smtp):
    [id_] = await add(pool)
    dying = OutboxWorker(pool, smtp.url, FROM, lease_seconds=60)
    [claimed] = await dying._claim()  # it claims, then "crashes" before sending
    assert claimed.id == id_
    assert await OutboxWorker(pool, smtp.url, FROM).deliver_due() == 0  # leased: nobody else sends it
    await pool.execute("UPDATE outbox SET next_attempt_at = now()")  # the lease runs out
    assert await OutboxWorker(pool, smtp.url, FROM).deliver_due() == 1
    assert len(smtp.messages) == 1


async def test_run_loop_survives_an_outage_and_delivers(pool, smtp):
    await smtp.stop()
    worker = OutboxWorker(pool, smtp.url, FROM, poll_seconds=0.05, backoff_base=0.1, timeout=2)
    task = asyncio.create_task(worker.run())
    try:
        [id_] = await add(pool)
        worker.wake()
        for _ in range(100):
            if (await row(pool, id_))["attempts"] >= 1:
                break
            await asyncio.sleep(0.02)
        assert (await row(pool, id_))["sent_at"] is None
        await smtp.start()
        [mail] = await smtp.wait_for(1)
        assert mail.subject == "Welcome 0"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (await row(pool, id_))["sent_at"] is not None


async def test_unbuildable_row_is_parked_and_others_still_go(pool, smtp):
    bad = await add(pool, 1, to="ada@example.com\r\nBcc: victim@example.com")
    good = await add(pool, 1)
    assert await OutboxWorker(pool, smtp.url, FROM).deliver_due() == 1
    r = await row(pool, bad[0])
    assert r["sent_at"] is None and r["last_error"].startswith("permanent:")
    assert r["finite"] is False  # parked: never due again, but kept
    assert [m.to for m in smtp.messages] == [("ada@example.com",)]
    assert (await row(pool, good[0]))["sent_at"] is not None


async def test_smtp_url_parsing():
    t = parse_smtp_url("smtps://me%40corp:p%2Fss@mail.example.com")
    assert (t.host, t.port, t.implicit_tls, t.username, t.password) == ("mail.example.com", 465, True, "me@corp", "p/ss")
    assert "p/ss" not in repr(t)
    t = parse_smtp_url("smtp://relay.example.com")
    assert (t.port, t.implicit_tls, t.username) == (587, False, None)
    for bad in ("http://x", "smtp://", "smtp://h:notaport"):
        with pytest.raises(ProviderError) as exc:
            parse_smtp_url(bad)
        assert exc.value.provider == "mail"


async def test_credentials_are_not_sent_in_clear_text_to_a_remote_host(pool, smtp, monkeypatch):
    """Over a connection without TLS, AUTH goes only to a loopback host."""
    assert parse_smtp_url("smtp://u:p@localhost:25").loopback and parse_smtp_url("smtp://u:p@[::1]:25").loopback
    assert not parse_smtp_url("smtp://u:p@mail.example.test:25").loopback
    [id_] = await add(pool)
    # The fake offers no STARTTLS; pretend it is remote (no network needed to prove the refusal).
    monkeypatch.setattr(SmtpTarget, "loopback", property(lambda self: False))
    assert await OutboxWorker(pool, smtp.url, FROM).deliver_due() == 0
    r = await row(pool, id_)
    assert "refusing to send credentials in clear text" in r["last_error"] and r["sent_at"] is None
    assert smtp.auth_failures == 0 and smtp.messages == []
