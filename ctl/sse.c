/* phyctl event stream decoding: chunked framing and Server-Sent Events. */
#include "sse.h"

#include <string.h>

#include "phy/err.h"
#include "phy/text.h"

enum {
    DC_SIZE,    /* hex digits of the size */
    DC_EXT,     /* ";ext" up to CR */
    DC_SIZE_LF, /* LF after the size line */
    DC_DATA,    /* chunk bytes */
    DC_DATA_CR, /* CR after the data */
    DC_DATA_LF, /* LF after the data */
    DC_TRAILER, /* start of a trailer line (or the final CRLF) */
    DC_TRAILER_IN /* inside a trailer line */,
    DC_TRAILER_LF,
    DC_FINAL_LF,
    DC_DONE,
};


/* A byte-at-a-time state machine; chunk data is copied in runs. */
int ctl_dechunk_feed(struct ctl_dechunk *d, const char *in, size_t n, char *out, size_t *outn)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        int h;

        switch (d->state) {
        case DC_SIZE:
            h = phy_hexval(ch);
            if (h >= 0) {
                if (++d->digits > 8)
                    return PHY_EPROTO;
                d->left = d->left * 16 + (uint64_t)h;
            } else if (d->digits > 0 && ch == ';') {
                d->state = DC_EXT;
            } else if (d->digits > 0 && ch == '\r') {
                d->state = DC_SIZE_LF;
            } else {
                return PHY_EPROTO;
            }
            break;
        case DC_EXT:
            if (ch == '\r')
                d->state = DC_SIZE_LF;
            else if ((unsigned char)ch < 0x20 && ch != '\t')
                return PHY_EPROTO;
            break;
        case DC_SIZE_LF:
            if (ch != '\n')
                return PHY_EPROTO;
            d->digits = 0;
            d->state = d->left > 0 ? DC_DATA : DC_TRAILER;
            break;
        case DC_DATA: {
            size_t take = n - i < d->left ? n - i : (size_t)d->left;
            memcpy(out + o, in + i, take);
            o += take;
            d->left -= take;
            i += take - 1;
            if (d->left == 0)
                d->state = DC_DATA_CR;
            break;
        }
        case DC_DATA_CR:
            if (ch != '\r')
                return PHY_EPROTO;
            d->state = DC_DATA_LF;
            break;
        case DC_DATA_LF:
            if (ch != '\n')
                return PHY_EPROTO;
            d->state = DC_SIZE;
            break;
        case DC_TRAILER:
            d->state = ch == '\r' ? DC_FINAL_LF : DC_TRAILER_IN;
            break;
        case DC_TRAILER_IN:
            if (ch == '\r')
                d->state = DC_TRAILER_LF;
            break;
        case DC_TRAILER_LF:
            if (ch != '\n')
                return PHY_EPROTO;
            d->state = DC_TRAILER;
            break;
        case DC_FINAL_LF:
            if (ch != '\n')
                return PHY_EPROTO;
            d->state = DC_DONE;
            *outn = o;
            return 1;
        default:
            *outn = o;
            return 1;
        }
    }
    *outn = o;
    return d->state == DC_DONE ? 1 : 0;
}

/* Handles one complete line (without its terminator). */
static int sse_line(struct ctl_sse *p, ctl_sse_fn fn, void *ctx)
{
    const char *line = p->line, *val;
    size_t n = p->ll, name_len, vl;
    int rc = 0;

    if (n == 0) {
        if (p->has_data) {
            p->data[p->dl] = '\0';
            rc = fn(ctx, p->type[0] != '\0' ? p->type : "message", p->data);
        }
        p->type[0] = '\0';
        p->dl = 0;
        p->has_data = 0;
        return rc;
    }
    if (line[0] == ':')
        return 0;
    val = memchr(line, ':', n);
    name_len = val != NULL ? (size_t)(val - line) : n;
    if (val != NULL) {
        val++;
        if (val < line + n && *val == ' ')
            val++;
        vl = (size_t)(line + n - val);
    } else {
        val = line + n;
        vl = 0;
    }
    if (name_len == 5 && memcmp(line, "event", 5) == 0) {
        if (vl >= sizeof p->type)
            vl = sizeof p->type - 1;
        memcpy(p->type, val, vl);
        p->type[vl] = '\0';
    } else if (name_len == 4 && memcmp(line, "data", 4) == 0) {
        size_t need = vl + (p->has_data ? 1 : 0);
        if (p->dl + need >= sizeof p->data)
            return PHY_ETOOBIG;
        if (p->has_data)
            p->data[p->dl++] = '\n';
        memcpy(p->data + p->dl, val, vl);
        p->dl += vl;
        p->has_data = 1;
    }
    return 0;
}

int ctl_sse_feed(struct ctl_sse *p, const char *in, size_t n, ctl_sse_fn fn, void *ctx)
{
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        int rc;

        if (ch == '\n' && p->after_cr) {
            p->after_cr = 0;
            continue;
        }
        p->after_cr = ch == '\r';
        if (ch == '\r' || ch == '\n') {
            rc = sse_line(p, fn, ctx);
            p->ll = 0;
            if (rc != 0)
                return rc;
            continue;
        }
        if (p->ll + 1 >= sizeof p->line)
            return PHY_ETOOBIG;
        p->line[p->ll++] = ch;
    }
    return 0;
}
