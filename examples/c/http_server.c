/* http_server: a small HTTP/1.1 server. GET / (or HEAD /) answers "Hello from a Keep!\n".
 *
 *   http_server [-n NAME] [-c COUNT]
 *
 * The listening socket is found as in echo_server (the [[files]] entry named NAME, default
 * "listen", or fd 3). Keep-alive and pipelining: a connection serves requests until the client
 * closes it or asks to ("Connection: close", or HTTP/1.0 without keep-alive). Other paths are
 * 404, other methods 405; request heads over 8 KiB are 431 and requests with a body 413 (then
 * the connection is closed). One thread, poll(), non-blocking fds. With -c it exits after COUNT
 * connections, printing a summary on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define IN_BYTES (8 * 1024)
#define OUT_BYTES (16 * 1024)
#define OUT_ROOM 512 /* a response always fits in this much */

static const char BODY[] = "Hello from a Keep!\n";

struct conn {
    int fd;
    char in[IN_BYTES];
    size_t inlen;
    char out[OUT_BYTES];
    size_t outlen, outoff;
    int eof, closing;
};

static struct conn *conns[MAX_CONNS];
static int nconns;
static int served;
static unsigned long long requests;

static int fd_by_name(const char *name, int fallback) {
    const char *p = getenv("FD_NAMES");
    if (p == NULL) return fallback;
    size_t want = strlen(name);
    for (int fd = 0;; fd++) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == want && strncmp(p, name, len) == 0) return fd;
        if (end == NULL) return -1;
        p = end + 1;
    }
}

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static const char *find(const char *hay, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0) return hay + i;
    return NULL;
}

/* The value of header `name` in the head [start, end), or NULL; its length in *len. */
static const char *header(const char *start, const char *end, const char *name, size_t *len) {
    size_t n = strlen(name);
    const char *line = find(start, (size_t)(end - start), "\r\n");
    while (line != NULL && line + 2 < end) {
        line += 2;
        const char *eol = find(line, (size_t)(end - line), "\r\n");
        if (eol == NULL) eol = end;
        if ((size_t)(eol - line) > n && line[n] == ':' && strncasecmp(line, name, n) == 0) {
            const char *v = line + n + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            *len = (size_t)(eol - v);
            return v;
        }
        line = eol;
    }
    return NULL;
}

static int value_is(const char *v, size_t len, const char *word) {
    return v != NULL && len == strlen(word) && strncasecmp(v, word, len) == 0;
}

static void respond(struct conn *c, int status, const char *reason, const char *body,
                    int with_body, int close_after, const char *extra) {
    int n = snprintf(c->out + c->outlen, OUT_BYTES - c->outlen,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "%s%s\r\n%s",
                     status, reason, strlen(body), extra, close_after ? "Connection: close\r\n" : "",
                     with_body ? body : "");
    if (n > 0) c->outlen += (size_t)n;
    if (close_after) c->closing = 1;
    requests++;
}

/* Answer every complete request in the input buffer (while responses fit). */
static void process(struct conn *c) {
    while (!c->closing && c->outlen + OUT_ROOM <= OUT_BYTES) {
        const char *head_end = find(c->in, c->inlen, "\r\n\r\n");
        if (head_end == NULL) {
            if (c->inlen == IN_BYTES)
                respond(c, 431, "Request Header Fields Too Large", "Too large\n", 1, 1, "");
            return;
        }
        const char *end = head_end + 2; /* keeps the last header's CRLF */
        size_t used = (size_t)(head_end + 4 - c->in);
        const char *sp1 = memchr(c->in, ' ', (size_t)(end - c->in));
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
        if (sp1 == NULL || sp2 == NULL) {
            respond(c, 400, "Bad Request", "Bad request\n", 1, 1, "");
            return;
        }
        int http11 = strncmp(sp2 + 1, "HTTP/1.1", 8) == 0;
        size_t len = 0;
        const char *conn = header(c->in, end, "Connection", &len);
        int keep = http11 ? !value_is(conn, len, "close") : value_is(conn, len, "keep-alive");
        const char *cl = header(c->in, end, "Content-Length", &len);
        const char *te = header(c->in, end, "Transfer-Encoding", &len);
        size_t method_len = (size_t)(sp1 - c->in);
        int get = method_len == 3 && memcmp(c->in, "GET", 3) == 0;
        int head = method_len == 4 && memcmp(c->in, "HEAD", 4) == 0;
        int root = sp2 - sp1 - 1 == 1 && sp1[1] == '/';
        if (te != NULL || (cl != NULL && !(len == 1 && cl[0] == '0'))) {
            respond(c, 413, "Content Too Large", "Request bodies are not accepted\n", 1, 1, "");
        } else if (!get && !head) {
            respond(c, 405, "Method Not Allowed", "Method not allowed\n", 1, !keep,
                    "Allow: GET, HEAD\r\n");
        } else if (!root) {
            respond(c, 404, "Not Found", "Not found\n", get, !keep, "");
        } else {
            respond(c, 200, "OK", BODY, get, !keep, "");
        }
        memmove(c->in, c->in + used, c->inlen - used);
        c->inlen -= used;
    }
}

/* 0 when everything is written or the socket is full, -1 when the connection failed. */
static int flush(struct conn *c) {
    while (c->outoff < c->outlen) {
        ssize_t n = write(c->fd, c->out + c->outoff, c->outlen - c->outoff);
        if (n > 0) c->outoff += (size_t)n;
        else if (n < 0 && errno == EAGAIN) return 0;
        else return -1;
    }
    c->outlen = c->outoff = 0;
    return 0;
}

static void finish(struct conn *c) {
    close(c->fd);
    c->fd = -1;
    served++;
}

static void on_event(struct conn *c, short revents) {
    if (revents & (POLLIN | POLLHUP | POLLERR) && !c->eof && !c->closing &&
        c->inlen < IN_BYTES) {
        ssize_t n = read(c->fd, c->in + c->inlen, IN_BYTES - c->inlen);
        if (n > 0) {
            c->inlen += (size_t)n;
            process(c);
        } else if (n == 0) {
            c->eof = 1;
        } else if (errno != EAGAIN) {
            finish(c);
            return;
        }
    }
    if (c->outlen > c->outoff && flush(c) < 0) {
        finish(c);
        return;
    }
    if (c->outlen == 0 && !c->closing) process(c); /* pipelined requests waiting for room */
    if (c->outlen > c->outoff && flush(c) < 0) {
        finish(c);
        return;
    }
    if ((c->eof || c->closing) && c->outlen == 0) {
        if (c->closing) shutdown(c->fd, SHUT_WR);
        finish(c);
    }
}

static short wanted(const struct conn *c) {
    short events = 0;
    if (c->outlen > c->outoff) events |= POLLOUT;
    if (!c->eof && !c->closing && c->inlen < IN_BYTES && c->outlen + OUT_ROOM <= OUT_BYTES)
        events |= POLLIN;
    return events ? events : POLLIN;
}

int main(int argc, char **argv) {
    const char *name = "listen";
    long count = 0;
    int opt;
    while ((opt = getopt(argc, argv, "n:c:")) != -1) {
        if (opt == 'n') name = optarg;
        else if (opt == 'c') count = strtol(optarg, NULL, 10);
        else {
            fprintf(stderr, "usage: http_server [-n NAME] [-c COUNT]\n");
            return 2;
        }
    }
    int lfd = fd_by_name(name, 3);
    if (lfd < 0) {
        fprintf(stderr, "http_server: FD_NAMES has no fd named \"%s\"\n", name);
        return 2;
    }
    if (set_nonblocking(lfd) < 0) {
        perror("http_server: fcntl");
        return 1;
    }
    static struct pollfd pfds[MAX_CONNS + 1];
    long accepted = 0;
    while (count <= 0 || served < count) {
        int listening = nconns < MAX_CONNS && (count <= 0 || accepted < count);
        int n = 0;
        for (int i = 0; i < nconns; i++) pfds[n++] = (struct pollfd){conns[i]->fd, wanted(conns[i]), 0};
        if (listening) pfds[n++] = (struct pollfd){lfd, POLLIN, 0};
        if (poll(pfds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            perror("http_server: poll");
            return 1;
        }
        int before = nconns;
        for (int i = 0; i < before; i++)
            if (pfds[i].revents) on_event(conns[i], pfds[i].revents);
        int kept = 0;
        for (int i = 0; i < nconns; i++) {
            if (conns[i]->fd >= 0) conns[kept++] = conns[i];
            else free(conns[i]);
        }
        nconns = kept;
        if (listening && (pfds[n - 1].revents & POLLIN)) {
            while (nconns < MAX_CONNS && (count <= 0 || accepted < count)) {
                struct sockaddr_storage peer;
                socklen_t peer_len = sizeof peer;
                int fd = accept(lfd, (struct sockaddr *)&peer, &peer_len);
                if (fd < 0) {
                    if (errno == EAGAIN || errno == ECONNABORTED) break;
                    perror("http_server: accept");
                    break;
                }
                struct conn *c = calloc(1, sizeof *c);
                if (c == NULL || set_nonblocking(fd) < 0) {
                    free(c);
                    close(fd);
                    continue;
                }
                c->fd = fd;
                conns[nconns++] = c;
                accepted++;
            }
        }
    }
    printf("http_server: served %d connections, %llu requests\n", served, requests);
    return 0;
}
