/* phyctl event stream decoding without I/O: HTTP chunked framing and Server-Sent
 * Events (text/event-stream) fed in arbitrary pieces. */
#ifndef PHY_CTL_SSE_H
#define PHY_CTL_SSE_H

#include <stddef.h>
#include <stdint.h>

#define CTL_SSE_LINE_MAX 65536 /* one line, and one event's data */

/* Called for each complete event with its type ("message" when none was given) and
 * its data lines joined by '\n'. A non-zero return stops the parser. */
typedef int (*ctl_sse_fn)(void *ctx, const char *type, const char *data);

/* SSE parser state (about 130 KiB: allocate it). Zero-initialize. */
struct ctl_sse {
    char line[CTL_SSE_LINE_MAX];
    size_t ll;
    char type[64];
    char data[CTL_SSE_LINE_MAX];
    size_t dl;
    int has_data;
    int after_cr; /* the previous byte was CR: a following LF belongs to it */
};

/* Feeds n bytes. Lines end in LF, CRLF or CR; "event:", "data:" fields are kept
 * (one optional space after the colon is dropped), ":" comments, "id:", "retry:"
 * and unknown fields are ignored; a blank line dispatches the event when it has
 * data. Returns 0, the callback's non-zero value when it stopped, or PHY_ETOOBIG
 * when a line or an event's data exceeds CTL_SSE_LINE_MAX. */
int ctl_sse_feed(struct ctl_sse *p, const char *in, size_t n, ctl_sse_fn fn, void *ctx);

#endif
