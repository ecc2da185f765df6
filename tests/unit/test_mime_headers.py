"""Threading headers from the start of a message's MIME, read as it arrives (CONTRACT.md section 4)."""

from sync_core.mime_headers import header_section, threading_ids

MIME = (
    b"Received: from mail.example by school.example; Mon, 30 Nov 2026 09:00:00 +0000\r\n"
    b"From: Tess Teacher <teacher@school.example>\r\n"
    b"Subject: Change of plan\r\n"
    b"Message-ID: <reply@school.example>\r\n"
    b"In-Reply-To: <contact@home.example>\r\n"
    b"References: <first@school.example>\r\n <contact@home.example>\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"In-Reply-To: <not-a-header@body.example>\r\n"
)


def test_only_the_header_section_is_read_however_the_bytes_arrive() -> None:
    head = MIME[: MIME.index(b"\r\n\r\n") + 4]
    for size in (1, 2, 3, 7, 64, len(MIME)):
        chunks = [MIME[i : i + size] for i in range(0, len(MIME), size)]
        consumed: list[bytes] = []

        def arriving(chunks: list[bytes] = chunks, consumed: list[bytes] = consumed):  # type: ignore[no-untyped-def]
            for chunk in chunks:
                consumed.append(chunk)
                yield chunk

        assert header_section(arriving()) == head
        assert sum(len(c) for c in consumed) < len(head) + size  # it stopped at the empty line


def test_threading_ids_come_from_the_headers_not_the_body() -> None:
    in_reply_to, references = threading_ids(header_section([MIME]))
    assert in_reply_to == ("<contact@home.example>",)
    assert references == ("<first@school.example>", "<contact@home.example>")


def test_an_endless_header_section_is_cut_at_the_limit() -> None:
    endless = (b"X-Filler: " + b"a" * 100 + b"\r\n" for _ in range(10_000))
    assert len(header_section(endless, limit=4096)) == 4096
    assert threading_ids(b"Subject: no threading\n\n") == ((), ())
    assert threading_ids(b"In-Reply-To: <a@x>\n\n") == (("<a@x>",), ())
