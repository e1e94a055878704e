/* JSON text with shortest reals; see include/phy/json.h. */
#include "phy/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct buf {
    char *p;
    size_t len, cap;
    int failed;
};

static void add(struct buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void adds(struct buf *b, const char *s)
{
    add(b, s, strlen(s));
}

int phy_json_real(double d, char *out, size_t cap)
{
    int n = 0;
    if (!isfinite(d) || cap < 32)
        return -1;
    for (int prec = 1; prec <= 17; prec++) {
        n = snprintf(out, cap, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    if (!strchr(out, '.') && !strchr(out, 'e')) {
        memcpy(out + n, ".0", 3);
        n += 2;
    }
    char *e = strchr(out, 'e');
    if (e) { /* "1e+05" -> "1e5", "1e-05" -> "1e-5" (as jansson writes them) */
        char *p = e + 1, *q;
        if (*p == '+')
            memmove(p, p + 1, strlen(p + 1) + 1);
        else if (*p == '-')
            p++;
        for (q = p; *q == '0' && q[1] != '\0'; q++)
            ;
        if (q != p)
            memmove(p, q, strlen(q) + 1);
        n = (int)strlen(out);
    }
    return n;
}

static void string(struct buf *b, const char *s, size_t n)
{
    add(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04X", c);
                esc = u;
            }
        }
        if (!esc)
            continue;
        add(b, s + run, i - run);
        adds(b, esc);
        run = i + 1;
    }
    add(b, s + run, n - run);
    add(b, "\"", 1);
}

static void indent(struct buf *b, size_t flags, int depth, int space)
{
    size_t w = flags & 0x1F;
    if (w > 0) {
        add(b, "\n", 1);
        for (size_t i = 0; i < (size_t)depth * w; i++)
            add(b, " ", 1);
    } else if (space && !(flags & JSON_COMPACT)) {
        add(b, " ", 1);
    }
}

/* What follows a member of an array or object: ",", or the closing's indent. */
static void after_member(struct buf *b, size_t flags, int depth, int last)
{
    if (last) {
        indent(b, flags, depth, 0);
        return;
    }
    add(b, ",", 1);
    indent(b, flags, depth + 1, 1);
}

struct key {
    const char *k;
    size_t n;
    json_t *v;
};

static int key_cmp(const void *a, const void *b)
{
    const struct key *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->k, y->k, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

static void value(struct buf *b, const json_t *v, size_t flags, int depth)
{
    char num[64];
    if (b->failed)
        return;
    switch (json_typeof(v)) {
    case JSON_NULL:
        adds(b, "null");
        break;
    case JSON_TRUE:
        adds(b, "true");
        break;
    case JSON_FALSE:
        adds(b, "false");
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        adds(b, num);
        break;
    case JSON_REAL:
        if (phy_json_real(json_real_value(v), num, sizeof num) < 0)
            b->failed = 1;
        else
            adds(b, num);
        break;
    case JSON_STRING:
        string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (n == 0) {
            adds(b, "[]");
            break;
        }
        add(b, "[", 1);
        indent(b, flags, depth + 1, 0);
        for (size_t i = 0; i < n; i++) {
            value(b, json_array_get(v, i), flags, depth + 1);
            after_member(b, flags, depth, i + 1 == n);
        }
        add(b, "]", 1);
        break;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        if (n == 0) {
            adds(b, "{}");
            break;
        }
        struct key *keys = malloc(n * sizeof *keys);
        if (!keys) {
            b->failed = 1;
            break;
        }
        const char *k;
        size_t kl;
        json_t *val, *o = (json_t *)v;
        json_object_keylen_foreach(o, k, kl, val)
        {
            keys[i].k = k;
            keys[i].n = kl;
            keys[i].v = val;
            i++;
        }
        if (flags & JSON_SORT_KEYS)
            qsort(keys, n, sizeof *keys, key_cmp);
        add(b, "{", 1);
        indent(b, flags, depth + 1, 0);
        for (i = 0; i < n; i++) {
            string(b, keys[i].k, keys[i].n);
            add(b, ":", 1);
            if (!(flags & JSON_COMPACT))
                add(b, " ", 1);
            value(b, keys[i].v, flags, depth + 1);
            after_member(b, flags, depth, i + 1 == n);
        }
        add(b, "}", 1);
        free(keys);
        break;
    }
    }
}

char *phy_json_dumps(const json_t *v, size_t flags)
{
    struct buf b = {0};
    if (!v || (!(flags & JSON_ENCODE_ANY) && !json_is_object(v) && !json_is_array(v)))
        return NULL;
    value(&b, v, flags, 0);
    if (b.failed || !b.p) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
