/* echo_server: echoes every byte back, on every connection of a listening socket.
 *
 *   echo_server [-n NAME] [-c COUNT]
 *
 * The listening socket is the [[files]] entry named NAME (default "listen"), found through
 * FD_NAMES as Enarx workloads do, or fd 3 when FD_NAMES is not set (a native run that was
 * handed the socket as fd 3). One thread, poll() over the listener and every connection,
 * non-blocking fds: many clients at once, and a client that stops reading stalls only its own
 * connection. At end of input a connection is flushed, half-closed (shutdown SHUT_WR) and
 * closed. With -c it exits after COUNT connections, printing a summary on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define BUF_BYTES (64 * 1024)

struct conn {
    int fd;
    char *buf;
    size_t len, off; /* bytes read and not yet written back */
    int eof;
};

static struct conn conns[MAX_CONNS];
static int nconns;
static int served;
static unsigned long long echoed;

/* The fd of the [[files]] entry called name, or -1; `fallback` when FD_NAMES is not set. */
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

static void finish(struct conn *c, const char *why) {
    if (why != NULL) fprintf(stderr, "echo_server: fd %d: %s\n", c->fd, why);
    close(c->fd);
    free(c->buf);
    c->fd = -1;
    served++;
}

/* Write back what is pending; 0 when done or blocked, -1 when the connection failed. */
static int flush(struct conn *c) {
    while (c->off < c->len) {
        ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);
        if (n > 0) {
            c->off += (size_t)n;
            echoed += (unsigned long long)n;
        } else if (n < 0 && errno == EAGAIN) {
            return 0;
        } else {
            return -1;
        }
    }
    c->len = c->off = 0;
    return 0;
}

static void on_event(struct conn *c, short revents) {
    if (c->len > 0) {
        if (revents & (POLLOUT | POLLHUP | POLLERR)) {
            if (flush(c) < 0) {
                finish(c, strerror(errno));
                return;
            }
        }
    } else if (revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = read(c->fd, c->buf, BUF_BYTES);
        if (n > 0) {
            c->len = (size_t)n;
            c->off = 0;
            if (flush(c) < 0) {
                finish(c, strerror(errno));
                return;
            }
        } else if (n == 0) {
            c->eof = 1;
        } else if (errno != EAGAIN) {
            finish(c, strerror(errno));
            return;
        }
    }
    if (c->eof && c->len == 0) {
        shutdown(c->fd, SHUT_WR);
        finish(c, NULL);
    }
}

int main(int argc, char **argv) {
    const char *name = "listen";
    long count = 0;
    int opt;
    while ((opt = getopt(argc, argv, "n:c:")) != -1) {
        if (opt == 'n') name = optarg;
        else if (opt == 'c') count = strtol(optarg, NULL, 10);
        else {
            fprintf(stderr, "usage: echo_server [-n NAME] [-c COUNT]\n");
            return 2;
        }
    }
    int lfd = fd_by_name(name, 3);
    if (lfd < 0) {
        fprintf(stderr, "echo_server: FD_NAMES has no fd named \"%s\"\n", name);
        return 2;
    }
    if (set_nonblocking(lfd) < 0) {
        perror("echo_server: fcntl");
        return 1;
    }
    static struct pollfd pfds[MAX_CONNS + 1];
    long accepted = 0;
    while (count <= 0 || served < count) {
        int listening = nconns < MAX_CONNS && (count <= 0 || accepted < count);
        int n = 0;
        for (int i = 0; i < nconns; i++)
            pfds[n++] = (struct pollfd){conns[i].fd, conns[i].len ? POLLOUT : POLLIN, 0};
        if (listening) pfds[n++] = (struct pollfd){lfd, POLLIN, 0};
        if (poll(pfds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            perror("echo_server: poll");
            return 1;
        }
        int before = nconns;
        for (int i = 0; i < before; i++)
            if (pfds[i].revents) on_event(&conns[i], pfds[i].revents);
        int kept = 0;
        for (int i = 0; i < nconns; i++)
            if (conns[i].fd >= 0) conns[kept++] = conns[i];
        nconns = kept;
        if (listening && (pfds[n - 1].revents & POLLIN)) {
            while (nconns < MAX_CONNS && (count <= 0 || accepted < count)) {
                struct sockaddr_storage peer;
                socklen_t peer_len = sizeof peer;
                int fd = accept(lfd, (struct sockaddr *)&peer, &peer_len);
                if (fd < 0) {
                    if (errno == EAGAIN || errno == ECONNABORTED) break;
                    perror("echo_server: accept");
                    break;
                }
                char *buf = malloc(BUF_BYTES);
                if (buf == NULL || set_nonblocking(fd) < 0) {
                    fprintf(stderr, "echo_server: cannot take a connection\n");
                    free(buf);
                    close(fd);
                    continue;
                }
                conns[nconns++] = (struct conn){fd, buf, 0, 0, 0};
                accepted++;
            }
        }
    }
    printf("echo_server: served %d connections, %llu bytes\n", served, echoed);
    return 0;
}
