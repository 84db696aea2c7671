/*
 * A TLS client in C: the ground truth for the agent's TLS request durations,
 * timed by a clock that is not the Python client's.
 *
 * Usage: tls_client h1|h2 PORT
 *
 * Loads the system libssl with dlopen (no OpenSSL headers needed: the few
 * prototypes are declared here) and calls SSL_write/SSL_read, not the _ex
 * variants, so the agent's non-_ex probes are the ones that fire. Prints
 * "ready" once libssl is mapped (the agent can probe it from then on), waits
 * for a line on stdin, runs its plan over one connection to 127.0.0.1:PORT,
 * then prints one line per request, the number of TLS data events the
 * agent's probes must have sent for its SSL calls, and "done":
 *
 *   <request id> <method> <path> <status> <start_ns> <end_ns>
 *   tls_events <n>
 *
 * Times are CLOCK_MONOTONIC, the clock of the kernel's bpf_ktime_get_ns. A
 * request starts just before the SSL_write that carries its first byte and
 * ends just after the SSL_read that returns its last response byte.
 *
 *   h1  HTTP/1.1 keep-alive against tests/py/http_server.py --tls:
 *       /mix/<code>/<size>/<cl|chunked|late>/truth, GET, HEAD and POST.
 *   h2  HTTP/2 (ALPN h2) against tests/py/h2_app.py under hypercorn:
 *       /mix/<code>/<size>/truth, /slow/<ms>/truth and
 *       /late/<ms>/<size>/truth, one stream at a time, then batches of
 *       concurrent streams.
 *
 * Where a wrong start or end would show, the plan has requests whose first
 * write blocks (a 4 MiB upload in one SSL_write: a start taken at the write's
 * return would be late by milliseconds) and whose last read blocks (the
 * server holds the response's last bytes back for 20 ms: an end taken when
 * that read began would be early by as much).
 *
 * Every request carries X-Request-ID and Authorization: Basic <token>.
 * Certificates are not verified: loopback only, a self-signed test server.
 * Any failure ends the process with a message on stderr and exit code 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;

#define SSL_VERIFY_NONE 0

static struct {
    const SSL_METHOD *(*TLS_client_method)(void);
    SSL_CTX *(*SSL_CTX_new)(const SSL_METHOD *method);
    void (*SSL_CTX_set_verify)(SSL_CTX *ctx, int mode, int (*callback)(int, void *));
    int (*SSL_CTX_set_alpn_protos)(SSL_CTX *ctx, const unsigned char *protos, unsigned int len);
    SSL *(*SSL_new)(SSL_CTX *ctx);
    int (*SSL_set_fd)(SSL *ssl, int fd);
    int (*SSL_connect)(SSL *ssl);
    int (*SSL_write)(SSL *ssl, const void *buf, int num);
    int (*SSL_read)(SSL *ssl, void *buf, int num);
    int (*SSL_get_error)(const SSL *ssl, int ret);
    void (*SSL_get0_alpn_selected)(const SSL *ssl, const unsigned char **data, unsigned int *len);
    int (*SSL_shutdown)(SSL *ssl);
    void (*SSL_free)(SSL *ssl);
    void (*SSL_CTX_free)(SSL_CTX *ctx);
} ossl;

/* The same token the test looks for in the agent's pages (it must never appear). */
#define AUTHORIZATION "Basic Yy1jbGllbnQ6dHJ1dGgtc2VjcmV0"
/* A realistic WSJF report size for request bodies. */
#define BODY_SIZE 20000
/* An upload larger than the socket buffers: its SSL_write blocks. */
#define UPLOAD_SIZE (4 << 20)
/* Response sizes: empty, small, one record, several records, many records. */
#define LARGEST 1048576
static const int SIZES[] = {0, 100, 5000, 20000, 150000, LARGEST};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])
/* Every read and write gives up after this long: no hang in a test. */
#define IO_TIMEOUT_S 10

#define MAX_REQUESTS 64

struct record {
    char id[16];
    const char *method;
    char path[64];
    int status;
    uint64_t start_ns, end_ns;
};

static struct record records[MAX_REQUESTS];
static int nrecords;
static int port;
static unsigned long tls_events;
/* HTTP/2 connections are captured whole, HTTP/1 ones by their edges. */
static int whole_calls;
static char body[UPLOAD_SIZE];

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tls_client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void load_libssl(void)
{
    void *lib = dlopen("libssl.so.3", RTLD_NOW);
    if (!lib)
        die("dlopen libssl.so.3: %s", dlerror());
#define LOAD(name)                                                                                                     \
    do {                                                                                                               \
        *(void **)&ossl.name = dlsym(lib, #name);                                                                      \
        if (!ossl.name)                                                                                                \
            die("libssl.so.3 has no %s", #name);                                                                       \
    } while (0)
    LOAD(TLS_client_method);
    LOAD(SSL_CTX_new);
    LOAD(SSL_CTX_set_verify);
    LOAD(SSL_CTX_set_alpn_protos);
    LOAD(SSL_new);
    LOAD(SSL_set_fd);
    LOAD(SSL_connect);
    LOAD(SSL_write);
    LOAD(SSL_read);
    LOAD(SSL_get_error);
    LOAD(SSL_get0_alpn_selected);
    LOAD(SSL_shutdown);
    LOAD(SSL_free);
    LOAD(SSL_CTX_free);
#undef LOAD
}

static struct record *new_record(const char *prefix, const char *method, const char *path)
{
    if (nrecords == MAX_REQUESTS)
        die("more than %d requests planned", MAX_REQUESTS);
    struct record *r = &records[nrecords];
    snprintf(r->id, sizeof r->id, "%s-%03d", prefix, nrecords);
    r->method = method;
    snprintf(r->path, sizeof r->path, "%s", path);
    nrecords++;
    return r;
}

static SSL *tls_connect(SSL_CTX *ctx, int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket: %m");
    /* Head and body may be separate writes: without this, Nagle and delayed
     * ACKs could hold the second one back for 40 ms. */
    int one = 1;
    struct timeval timeout = {.tv_sec = IO_TIMEOUT_S};
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout))
        die("setsockopt: %m");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr))
        die("connect 127.0.0.1:%d: %m", port);
    SSL *ssl = ossl.SSL_new(ctx);
    if (!ssl || ossl.SSL_set_fd(ssl, fd) != 1)
        die("SSL_new/SSL_set_fd failed");
    int r = ossl.SSL_connect(ssl);
    if (r != 1)
        die("TLS handshake failed (SSL_get_error %d)", ossl.SSL_get_error(ssl, r));
    *fd_out = fd;
    return ssl;
}

/* The agent's probes send an HTTP/1 call as one event (its first and last
 * bytes), and an HTTP/2 call's bytes in pieces of 8 KiB, at most 3, and what
 * is beyond them as one more event (a gap). */
static void count_tls_events(int n)
{
    if (!whole_calls) {
        tls_events += 1;
        return;
    }
    int pieces = (n + 8191) / 8192;
    tls_events += pieces < 3 ? pieces : 3;
    tls_events += n > 3 * 8192;
}

static void tls_write(SSL *ssl, const void *buf, int len)
{
    int r = ossl.SSL_write(ssl, buf, len);
    if (r != len)
        die("SSL_write of %d bytes returned %d (SSL_get_error %d)", len, r, ossl.SSL_get_error(ssl, r));
    count_tls_events(r);
}

/* One SSL_read; *at is taken right after it returns. */
static int tls_read(SSL *ssl, void *buf, int cap, uint64_t *at)
{
    int r = ossl.SSL_read(ssl, buf, cap);
    *at = now_ns();
    if (r <= 0)
        die("SSL_read returned %d (SSL_get_error %d): the server ended the connection or timed out", r,
            ossl.SSL_get_error(ssl, r));
    count_tls_events(r);
    return r;
}

/* ---------------------------------------------------------------- HTTP/1.1 */

#define H1_REQUESTS 48
static const int H1_CODES[] = {200, 201, 404, 500};
/* The largest response (1 MiB, chunked) with its head and chunk lines. */
static char response[LARGEST + 65536];

/* The value of header `name` in `head` (its length in *len), or NULL. */
static const char *h1_header(const char *head, size_t head_len, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (const char *line = head; line < head + head_len;) {
        const char *eol = memmem(line, head + head_len - line, "\r\n", 2);
        if (!eol)
            return NULL;
        if ((size_t)(eol - line) > n && line[n] == ':' && !strncasecmp(line, name, n)) {
            *len = (size_t)(eol - line) - n - 1;
            return line + n + 1;
        }
        line = eol + 2;
    }
    return NULL;
}

/* The length of the response in b[0..n) once it is complete, else 0. */
static size_t h1_complete(const char *b, size_t n, int bodiless, int *status)
{
    const char *end = memmem(b, n, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - b) + 4, len;
    if (head < 16 || memcmp(b, "HTTP/1.1 ", 9) || b[9] < '1' || b[9] > '5')
        die("bad status line: %.40s", b);
    *status = (int)strtol(b + 9, NULL, 10);
    if (bodiless)
        return head;
    const char *te = h1_header(b, head, "transfer-encoding", &len);
    if (te && memmem(te, len, "chunked", 7)) {
        /* Each pass walks the chunks from the start: at most one per 8 KiB of body. */
        size_t at = head;
        for (;;) {
            const char *eol = memmem(b + at, n - at, "\r\n", 2);
            if (!eol)
                return 0;
            unsigned long size = strtoul(b + at, NULL, 16);
            at = (size_t)(eol - b) + 2;
            if (size == 0)
                return n >= at + 2 ? at + 2 : 0;
            at += size + 2;
            if (at > n)
                return 0;
        }
    }
    const char *cl = h1_header(b, head, "content-length", &len);
    if (!cl)
        die("response without a length: %.200s", b);
    size_t total = head + strtoul(cl, NULL, 10);
    return n >= total ? total : 0;
}

static void run_h1(SSL *ssl)
{
    static char head[1024];
    for (int i = 0; i < H1_REQUESTS; i++) {
        const char *method = i % 5 == 4 ? "POST" : i % 13 == 6 ? "HEAD" : "GET";
        int head_only = !strcmp(method, "HEAD"), late = i % 7 == 3 && !head_only;
        /* A late body fits one record: the read that waits for it is the last. */
        int size = late ? 5000 : SIZES[i % NSIZES];
        /* HEAD only with Content-Length: the server's chunked mode writes a body regardless. */
        const char *mode = late ? "late" : (i / NSIZES) % 2 && !head_only ? "chunked" : "cl";
        char path[64];
        snprintf(path, sizeof path, "/mix/%d/%d/%s/truth", H1_CODES[i % 4], size, mode);
        struct record *r = new_record("h1", method, path);
        int post = !strcmp(method, "POST");
        /* POSTs alternate: head and 20 kB body in two writes (as http.client
         * sends them), and head and a 4 MiB upload in one blocking write. */
        int two_writes = i % 2, size_out = !post ? 0 : two_writes ? BODY_SIZE : UPLOAD_SIZE;
        int n = snprintf(head, sizeof head,
                         "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Request-ID: %s\r\nAuthorization: %s\r\n"
                         "Content-Length: %d\r\n\r\n",
                         method, path, port, r->id, AUTHORIZATION, size_out);
        static char whole[sizeof head + UPLOAD_SIZE];
        if (post && !two_writes) {
            memcpy(whole, head, n);
            memcpy(whole + n, body, size_out);
        }
        r->start_ns = now_ns();
        if (post && two_writes) {
            tls_write(ssl, head, n);
            tls_write(ssl, body, size_out);
        } else if (post) {
            tls_write(ssl, whole, n + size_out);
        } else {
            tls_write(ssl, head, n);
        }
        size_t got = 0, total = 0;
        while (!total) {
            if (got == sizeof response)
                die("response to %s larger than %zu bytes", r->id, sizeof response);
            got += tls_read(ssl, response + got, (int)(sizeof response - got), &r->end_ns);
            total = h1_complete(response, got, head_only, &r->status);
        }
        if (total != got)
            die("%zu bytes after the response to %s", got - total, r->id);
    }
}

/* ---------------------------------------------------------------- HTTP/2 */

enum { DATA = 0, HEADERS = 1, RST_STREAM = 3, SETTINGS = 4, PING = 6, GOAWAY = 7, WINDOW_UPDATE = 8, CONTINUATION = 9 };
enum { END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8, PRIORITY = 0x20 };
#define SETTINGS_ENABLE_PUSH 0x2
#define SETTINGS_INITIAL_WINDOW_SIZE 0x4
/* The protocol's default frame size limit, which neither side raises here. */
#define MAX_FRAME 16384
/* The default initial window: the receive windows this client keeps open. */
#define DEFAULT_WINDOW 65535
/* Window given back once this much was consumed, as h2 clients do. */
#define WINDOW_REFILL 32768
#define H2_SEQUENTIAL 30
/* How late /slow answers, and /late ends its stream. */
#define SLOW_MS 20
#define H2_BATCHES 4
#define H2_CONCURRENT 5
/* :status values HPACK's static table holds (indices 8..14); hypercorn sends
 * those as one indexed byte, so no Huffman decoder is needed here. */
static const int STATIC_STATUS[] = {200, 204, 206, 304, 400, 404, 500};
static const int H2_CODES[] = {200, 404, 500};

struct stream {
    uint32_t id;
    struct record *rec;
    int64_t send_window;
    uint32_t unacked; /* received DATA not yet given back in a WINDOW_UPDATE */
    int open;
    int end_at_end_headers; /* HEADERS with END_STREAM waiting for its CONTINUATION */
};

static struct {
    SSL *ssl;
    uint32_t next_id;
    int64_t send_window;    /* connection-level, what the server lets us send */
    int64_t initial_window; /* the server's SETTINGS_INITIAL_WINDOW_SIZE */
    uint32_t unacked;
    struct stream streams[H2_CONCURRENT];
    uint8_t in[2 * (9 + MAX_FRAME)];
    size_t in_len;
    uint8_t out[1024]; /* control frames to send after a read */
    size_t out_len;
} h2 = {.next_id = 1, .send_window = DEFAULT_WINDOW, .initial_window = DEFAULT_WINDOW};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t put_frame_header(uint8_t *out, size_t len, int type, int flags, uint32_t stream)
{
    out[0] = len >> 16, out[1] = len >> 8, out[2] = len;
    out[3] = type, out[4] = flags;
    out[5] = stream >> 24, out[6] = stream >> 16, out[7] = stream >> 8, out[8] = stream;
    return 9;
}

static void queue_control(int type, int flags, uint32_t stream, const uint8_t *payload, size_t len)
{
    if (h2.out_len + 9 + len > sizeof h2.out)
        die("too many control frames waiting");
    h2.out_len += put_frame_header(h2.out + h2.out_len, len, type, flags, stream);
    if (len)
        memcpy(h2.out + h2.out_len, payload, len);
    h2.out_len += len;
}

static void queue_window_update(uint32_t stream, uint32_t increment)
{
    uint8_t p[4] = {increment >> 24, increment >> 16, increment >> 8, increment};
    queue_control(WINDOW_UPDATE, 0, stream, p, 4);
}

/* An HPACK integer with an n-bit prefix (RFC 7541 5.1). */
static size_t hpack_int(uint8_t *out, uint8_t first, int bits, size_t v)
{
    size_t max = (1u << bits) - 1, n = 0;
    if (v < max) {
        out[n++] = first | v;
        return n;
    }
    out[n++] = first | max;
    for (v -= max; v >= 128; v /= 128)
        out[n++] = (v % 128) | 128;
    out[n++] = v;
    return n;
}

/* A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2). */
static size_t hpack_literal(uint8_t *out, const char *name, const char *value)
{
    size_t n = hpack_int(out, 0x00, 4, 0);
    n += hpack_int(out + n, 0x00, 7, strlen(name));
    memcpy(out + n, name, strlen(name));
    n += strlen(name);
    n += hpack_int(out + n, 0x00, 7, strlen(value));
    memcpy(out + n, value, strlen(value));
    return n + strlen(value);
}

static struct stream *stream_of(uint32_t id)
{
    for (int i = 0; i < H2_CONCURRENT; i++)
        if (h2.streams[i].id == id && h2.streams[i].open)
            return &h2.streams[i];
    return NULL;
}

static void end_stream(struct stream *s, uint64_t at)
{
    s->rec->end_ns = at;
    s->open = 0;
}

static void on_frame(int type, int flags, uint32_t id, const uint8_t *p, size_t len, uint64_t at)
{
    struct stream *s = stream_of(id);
    switch (type) {
    case DATA:
        h2.unacked += len;
        if (!s)
            die("DATA for stream %u, which is not open", id);
        s->unacked += len;
        if (flags & END_STREAM)
            end_stream(s, at);
        break;
    case HEADERS: {
        if (!s)
            die("HEADERS for stream %u, which is not open", id);
        size_t skip = (flags & PADDED ? 1 : 0) + (flags & PRIORITY ? 5 : 0);
        size_t pad = flags & PADDED && len ? p[0] : 0;
        if (len < skip + pad + 1)
            die("malformed HEADERS frame on stream %u", id);
        p += skip;
        /* The first HEADERS carries :status first; later ones are trailers. */
        if (!s->rec->status) {
            int index = p[0] & 0x7f;
            if (!(p[0] & 0x80) || index < 8 || index > 14)
                die("stream %u: :status not indexed from HPACK's static table (first byte 0x%02x)", id, p[0]);
            s->rec->status = STATIC_STATUS[index - 8];
        }
        if (flags & END_STREAM && flags & END_HEADERS)
            end_stream(s, at);
        else if (flags & END_STREAM)
            s->end_at_end_headers = 1;
        break;
    }
    case CONTINUATION:
        if (s && flags & END_HEADERS && s->end_at_end_headers)
            end_stream(s, at);
        break;
    case SETTINGS:
        if (flags & ACK)
            break;
        for (size_t i = 0; i + 6 <= len; i += 6) {
            if ((p[i] << 8 | p[i + 1]) != SETTINGS_INITIAL_WINDOW_SIZE)
                continue;
            int64_t value = be32(p + i + 2);
            for (int k = 0; k < H2_CONCURRENT; k++)
                h2.streams[k].send_window += value - h2.initial_window;
            h2.initial_window = value;
        }
        queue_control(SETTINGS, ACK, 0, NULL, 0);
        break;
    case WINDOW_UPDATE:
        if (len != 4)
            die("malformed WINDOW_UPDATE");
        if (id == 0)
            h2.send_window += be32(p) & 0x7fffffff;
        else if (s)
            s->send_window += be32(p) & 0x7fffffff;
        break;
    case PING:
        if (!(flags & ACK))
            queue_control(PING, ACK, 0, p, len);
        break;
    case RST_STREAM:
        die("the server reset stream %u (error %u)", id, len == 4 ? be32(p) : 0);
    case GOAWAY:
        die("the server sent GOAWAY (error %u)", len >= 8 ? be32(p + 4) : 0);
    default:
        break;
    }
}

/* One SSL_read: the frames it completes are handled with the time it returned;
 * then SETTINGS/PING acks and WINDOW_UPDATEs go out in one write. */
static void h2_read(void)
{
    uint64_t at;
    h2.in_len += tls_read(h2.ssl, h2.in + h2.in_len, (int)(sizeof h2.in - h2.in_len), &at);
    size_t used = 0;
    while (h2.in_len - used >= 9) {
        const uint8_t *f = h2.in + used;
        size_t len = (size_t)f[0] << 16 | f[1] << 8 | f[2];
        if (len > MAX_FRAME)
            die("frame of %zu bytes, above the %d we allow", len, MAX_FRAME);
        if (h2.in_len - used < 9 + len)
            break;
        on_frame(f[3], f[4], be32(f + 5) & 0x7fffffff, f + 9, len, at);
        used += 9 + len;
    }
    memmove(h2.in, h2.in + used, h2.in_len - used);
    h2.in_len -= used;
    if (h2.unacked >= WINDOW_REFILL) {
        queue_window_update(0, h2.unacked);
        h2.unacked = 0;
    }
    for (int k = 0; k < H2_CONCURRENT; k++) {
        struct stream *s = &h2.streams[k];
        if (s->open && s->unacked >= WINDOW_REFILL) {
            queue_window_update(s->id, s->unacked);
            s->unacked = 0;
        }
    }
    if (h2.out_len) {
        tls_write(h2.ssl, h2.out, (int)h2.out_len);
        h2.out_len = 0;
    }
}

/* Opens stream `slot` for `method path` (a POST carries a body): HEADERS in
 * one write, the body in DATA frames as the flow-control windows allow. */
static void h2_request(int slot, const char *method, const char *path)
{
    static uint8_t frame[9 + MAX_FRAME];
    struct stream *s = &h2.streams[slot];
    if (s->open)
        die("slot %d still has stream %u open", slot, s->id);
    *s = (struct stream){.id = h2.next_id, .send_window = h2.initial_window, .open = 1};
    h2.next_id += 2;
    s->rec = new_record("h2", method, path);
    int post = !strcmp(method, "POST");
    char authority[32], length[16];
    snprintf(authority, sizeof authority, "127.0.0.1:%d", port);
    snprintf(length, sizeof length, "%d", BODY_SIZE);
    uint8_t *b = frame + 9;
    size_t n = hpack_literal(b, ":method", method);
    n += hpack_literal(b + n, ":scheme", "https");
    n += hpack_literal(b + n, ":authority", authority);
    n += hpack_literal(b + n, ":path", path);
    n += hpack_literal(b + n, "x-request-id", s->rec->id);
    n += hpack_literal(b + n, "authorization", AUTHORIZATION);
    if (post)
        n += hpack_literal(b + n, "content-length", length);
    put_frame_header(frame, n, HEADERS, END_HEADERS | (post ? 0 : END_STREAM), s->id);
    s->rec->start_ns = now_ns();
    tls_write(h2.ssl, frame, (int)(9 + n));
    for (size_t sent = 0; post && sent < BODY_SIZE;) {
        size_t piece = BODY_SIZE - sent < MAX_FRAME ? BODY_SIZE - sent : MAX_FRAME;
        /* Bounded by the IO timeout: every read either brings frames or dies. */
        while (h2.send_window < (int64_t)piece || s->send_window < (int64_t)piece)
            h2_read();
        int last = sent + piece == BODY_SIZE;
        put_frame_header(frame, piece, DATA, last ? END_STREAM : 0, s->id);
        memcpy(frame + 9, body + sent, piece);
        tls_write(h2.ssl, frame, (int)(9 + piece));
        h2.send_window -= piece;
        s->send_window -= piece;
        sent += piece;
    }
}

static int h2_open_streams(void)
{
    int n = 0;
    for (int k = 0; k < H2_CONCURRENT; k++)
        n += h2.streams[k].open;
    return n;
}

static void run_h2(SSL *ssl)
{
    const unsigned char *alpn;
    unsigned int alpn_len;
    ossl.SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2))
        die("the server did not select ALPN h2");
    h2.ssl = ssl;
    /* The client preface and our SETTINGS (no server push): connection-level,
     * written before any request. */
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const uint8_t no_push[6] = {0, SETTINGS_ENABLE_PUSH, 0, 0, 0, 0};
    uint8_t start[sizeof preface - 1 + 9 + sizeof no_push];
    memcpy(start, preface, sizeof preface - 1);
    put_frame_header(start + sizeof preface - 1, sizeof no_push, SETTINGS, 0, 0);
    memcpy(start + sizeof preface - 1 + 9, no_push, sizeof no_push);
    tls_write(ssl, start, sizeof start);
    char path[64];
    for (int i = 0; i < H2_SEQUENTIAL; i++) {
        if (i % 10 == 9)
            snprintf(path, sizeof path, "/slow/%d/truth", SLOW_MS);
        else if (i % 10 == 4)
            snprintf(path, sizeof path, "/late/%d/5000/truth", SLOW_MS);
        else
            snprintf(path, sizeof path, "/mix/%d/%d/truth", H2_CODES[(i / NSIZES) % 3], SIZES[i % NSIZES]);
        h2_request(0, i % 4 == 3 ? "POST" : "GET", path);
        while (h2_open_streams())
            h2_read();
    }
    for (int batch = 0; batch < H2_BATCHES; batch++) {
        for (int j = 0; j < H2_CONCURRENT; j++) {
            int k = batch + j;
            if (j == 4 && batch % 2)
                snprintf(path, sizeof path, "/slow/%d/truth", SLOW_MS);
            else if (j == 3 && batch % 2 == 0)
                snprintf(path, sizeof path, "/late/%d/5000/truth", SLOW_MS);
            else
                snprintf(path, sizeof path, "/mix/%d/%d/truth", H2_CODES[k % 3], SIZES[k % NSIZES]);
            h2_request(j, j == 2 ? "POST" : "GET", path);
        }
        while (h2_open_streams())
            h2_read();
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "h1") && strcmp(argv[1], "h2")) || (port = atoi(argv[2])) <= 0)
        die("usage: tls_client h1|h2 PORT");
    int http2 = !strcmp(argv[1], "h2");
    whole_calls = http2;
    memset(body, 'p', sizeof body);
    load_libssl();
    SSL_CTX *ctx = ossl.SSL_CTX_new(ossl.TLS_client_method());
    if (!ctx)
        die("SSL_CTX_new failed");
    ossl.SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* SSL_CTX_set_alpn_protos returns 0 on success. */
    if (http2 && ossl.SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3))
        die("SSL_CTX_set_alpn_protos failed");
    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        die("stdin closed before the go");

    int fd;
    SSL *ssl = tls_connect(ctx, &fd);
    if (http2)
        run_h2(ssl);
    else
        run_h1(ssl);
    ossl.SSL_shutdown(ssl);
    ossl.SSL_free(ssl);
    close(fd);
    ossl.SSL_CTX_free(ctx);

    for (int i = 0; i < nrecords; i++) {
        struct record *r = &records[i];
        printf("%s %s %s %d %llu %llu\n", r->id, r->method, r->path, r->status, (unsigned long long)r->start_ns,
               (unsigned long long)r->end_ns);
    }
    printf("tls_events %lu\ndone\n", tls_events);
    return 0;
}
