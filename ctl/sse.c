/* phyctl event stream decoding: chunked framing and Server-Sent Events. */
#include "sse.h"

#include <string.h>

#include "phy/err.h"
#include "phy/text.h"

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
