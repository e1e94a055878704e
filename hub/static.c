/* The console's static files (docs/protocol.md section 4): GET / and GET /<name>
 * from --web-root, flat (no sub-folders), regular files only, at most 1 MiB. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handlers.h"
#include "phy/err.h"
#include "phy/text.h"
#include "phy/file.h"

#define STATIC_MAX_BYTES (1u << 20)
#define STATIC_NAME_MAX 128

struct static_type {
    const char *ext;
    const char *type;
};

static const struct static_type types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".json", "application/json"},
    {".webmanifest", "application/manifest+json"},
};

/* [A-Za-z0-9_-][A-Za-z0-9._-]*: no leading dot, no slash, hence no "..". */
static int name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > STATIC_NAME_MAX || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!phy_name_char((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

static void not_found(struct api_response *res)
{
    api_error(res, 404, "not_found", "no such endpoint");
}

/* Reads a regular file of at most STATIC_MAX_BYTES into a malloc'd buffer (one
 * spare byte, NUL-terminated; the caller frees it). 0, PHY_ENOTFOUND (missing,
 * unreadable, not a regular file, a symlink, too big) or PHY_EIO / PHY_ENOMEM. */
static int read_file(const char *path, char **out, size_t *len)
{
    /* O_NONBLOCK: a FIFO planted in the web root must not hang a worker. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? PHY_EIO : PHY_ENOTFOUND;
    int rc = phy_read_regular(fd, STATIC_MAX_BYTES, out, len);
    close(fd);
    return rc == PHY_EINVAL || rc == PHY_ETOOBIG ? PHY_ENOTFOUND : rc;
}

void handle_static(struct hub *h, const struct api_request *req, struct api_response *res)
{
    const char *name = req->path[0] == '/' ? req->path + 1 : NULL;
    char path[4096];
    char *body = NULL;
    size_t len = 0;

    if (name && name[0] == '\0')
        name = "index.html";
    const char *type = name && name_valid(name) ? content_type(name) : NULL;
    if (!type || !h->cfg.web_root) {
        not_found(res);
        return;
    }
    int n = snprintf(path, sizeof(path), "%s/%s", h->cfg.web_root, name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        not_found(res);
        return;
    }
    int rc = read_file(path, &body, &len);
    if (rc == PHY_ENOTFOUND) {
        not_found(res);
        return;
    }
    if (rc < 0) {
        api_error(res, 500, "internal", "cannot read the file");
        return;
    }
    free(res->body);
    res->body = body;
    res->body_len = len;
    res->status = 200;
    res->content_type = type;
    snprintf(res->extra_headers, sizeof(res->extra_headers), "Cache-Control: no-cache\r\n");
}

char *static_default_root(const char *rel_from_exe, const char *fallback)
{
    char exe[4096], path[4400];
    struct stat st;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash;

    if (n > 0) {
        exe[n] = '\0';
        if ((slash = strrchr(exe, '/')) != NULL) {
            *slash = '\0';
            /* An installed tree is recognised by its index.html: a build tree has none. */
            if ((size_t)snprintf(path, sizeof(path), "%s/%s/index.html", exe, rel_from_exe) <
                    sizeof(path) &&
                stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                char *real;
                path[strlen(path) - (sizeof("/index.html") - 1)] = '\0';
                real = realpath(path, NULL); /* /usr/sbin/../share/... as /usr/share/... */
                return real ? real : strdup(path);
            }
        }
    }
    return strdup(fallback);
}
