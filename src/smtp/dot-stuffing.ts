/**
 * Transparency for the DATA phase (RFC 5321 §4.5.2), one chunk at a time: a dot at the start
 * of a line is doubled, and the message ends with CRLF "." CRLF. smtp-server hands the gateway
 * the message with the client's stuffing removed; this puts it back for the mail store.
 *
 * "Start of a line" is after any LF, bare or not: smtp-server unstuffs a dot after any LF, and
 * so does Postfix, so a bare LF followed by a dot must be stuffed too or a line ".\n" could end
 * the message early at the store.
 */
export class DotStuffer {
  #atLineStart = true;
  /** The last two bytes written, to know whether the message already ends with CRLF. */
  #tail: number[] = [];
  #bytes = 0;

  /** Bytes of message content seen (before stuffing). */
  get bytes(): number {
    return this.#bytes;
  }

  /** The stuffed form of the next chunk of the message. */
  push(chunk: Buffer): Buffer {
    if (chunk.length === 0) return chunk;
    this.#bytes += chunk.length;
    let extra = 0;
    let lineStart = this.#atLineStart;
    for (let i = 0; i < chunk.length; i++) {
      if (lineStart && chunk[i] === 0x2e) extra++;
      lineStart = chunk[i] === 0x0a;
    }
    let out = chunk;
    if (extra > 0) {
      out = Buffer.allocUnsafe(chunk.length + extra);
      let o = 0;
      lineStart = this.#atLineStart;
      for (let i = 0; i < chunk.length; i++) {
        const b = chunk[i]!;
        if (lineStart && b === 0x2e) out[o++] = 0x2e;
        out[o++] = b;
        lineStart = b === 0x0a;
      }
    }
    this.#atLineStart = lineStart;
    if (chunk.length >= 2) this.#tail = [chunk[chunk.length - 2]!, chunk[chunk.length - 1]!];
    else this.#tail = [...this.#tail, chunk[0]!].slice(-2);
    return out;
  }

  /** The end-of-data sequence: CRLF "." CRLF, or "." CRLF when the message already ends with CRLF. */
  end(): Buffer {
    const endsWithCrlf = this.#tail[0] === 0x0d && this.#tail[1] === 0x0a;
    return Buffer.from(this.#bytes === 0 || endsWithCrlf ? '.\r\n' : '\r\n.\r\n', 'latin1');
  }
}
