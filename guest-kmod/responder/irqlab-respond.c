// SPDX-License-Identifier: GPL-2.0-or-later OR MIT
/*
 * irqlab-respond: the native responder for the latency hot path.
 *
 * Arms one notification path exactly as the Python agent does
 * (harness/irqlab_agent/paths.py, hwpaths.py), ACKs each event right after the
 * wake-up with no other work, and keeps per-event timestamps in memory:
 *
 *   wake_ns	CLOCK_MONOTONIC when the waiting syscall returned (read, poll,
 *		select, epoll_wait, sigwaitinfo) -- before the records are read
 *   ack_ns	CLOCK_MONOTONIC right after this event's ACK returned
 *   lat_ns	the device's raise -> ACK latency (QEMU virtual clock)
 *
 * plus the driver's record timestamps (raise_ns, isr_dev_ns, isr_ns,
 * drv_wake_ns) where the path reads records, and for UIO the device clock
 * read through the mapping right after the wake-up (dev_wake_ns).  When the
 * run ends (-n events handled, SIGTERM or SIGINT) it writes one JSON object
 * to stdout.  "ready" is printed on stdout (and flushed) once the path is
 * armed, so a caller can start the interrupts without guessing.
 *
 * Usage: irqlab-respond PATH [options]
 *   PATH: read nonblock poll select epoll-lt epoll-et sigio setsig eventfd
 *         count uio gpio-cdev
 *   -d DEV      node (/dev/irqlab0; count: /dev/irqlab0-count; gpio-cdev: the
 *               chip, default the first labelled irqlab-*)
 *   -n N        stop after N events (0: until SIGTERM)
 *   -b N        records per read(2) (64)
 *   -i US       nonblock: pause between EAGAIN polls (1000, as the agent)
 *   -s N        setsig: signal SIGRTMIN+N (1)
 *   -A DEV -F SEQ  count, gpio-cdev: ACK the k-th event as SEQ+k-1 on DEV
 *   -u NAME     uio: the uio device's name (irqlab0, uio_pci_generic)
 *   -m MAP      uio: uio (map 0 of the uio device) | resource0 (sysfs)
 *   -r HOW      uio: device (IRQ_ENABLE) | config (COMMAND.INTX_DISABLE)
 *   -l LINE -B BUF  gpio-cdev: the line (0) and kernel event buffer (1024)
 *
 * Constants come from the driver's uapi header and the device's register map,
 * never retyped.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <linux/gpio.h>
#include <linux/irqlab.h>
#include "irqlab-regs.h"

#define PCI_COMMAND_REG		0x04
#define PCI_COMMAND_INTX_DIS	0x400

struct sample {
	uint32_t seq;		/* device seq (count, gpio-cdev: the one ACKed) */
	uint32_t flags;		/* record flags; gpio-cdev: the edge id */
	uint32_t lost;		/* record lost; gpio-cdev: seqno */
	uint32_t batch;		/* events handled in this wake-up */
	uint64_t raise_ns, isr_dev_ns, isr_ns, drv_wake_ns;
	uint64_t wake_ns, ack_ns, lat_ns, dev_wake_ns, gpio_ts_ns;
	int ack_ok;
};

static const char *path_name;
static void ready(void);
/* A clock offset measurement (see clock_sync()). */
struct clock_sync {
	int ok;
	uint64_t mono_ns, bracket_ns;
	int64_t offset_ns;
};

static struct clock_sync sync_start, sync_end;
static void clock_sync(struct clock_sync *cs);
static volatile sig_atomic_t stopping;
static struct sample *samples;
static size_t nsamples, cap, limit;
static unsigned long wakeups, reads, eagain, spurious, acks, ack_errors, sigs;
static const char *exit_reason = "count";
static int exit_errno;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "irqlab-respond %s: %s: %s\n", path_name, what, strerror(errno));
	exit(2);
}

static struct sample *next_sample(void)
{
	if (nsamples == cap) {
		size_t ncap = cap ? cap * 2 : 4096;
		struct sample *p = realloc(samples, ncap * sizeof(*p));

		if (!p)
			die("realloc");
		memset(p + cap, 0, (ncap - cap) * sizeof(*p));
		samples = p;
		cap = ncap;
	}
	return &samples[nsamples++];
}

static int done(void)
{
	return stopping || (limit && nsamples >= limit);
}

/* Record an error that ends the loop (not while stopping: that is EINTR). */
static int fail(const char *why)
{
	if (stopping)
		return -1;
	exit_reason = why;
	exit_errno = errno;
	return -1;
}

/* --- the driver's record paths --------------------------------------------- */

static int dev_fd, ack_fd = -1;
static unsigned int batch = 64;
static struct irqlab_event *rbuf;

/*
 * One blocking read(2) of up to @len bytes of the device into @buf, retried
 * after a signal, the wake-up time (taken as it returns) in @wake: the bytes
 * read, or -1 on an error (recorded by fail()) or once stopping.
 */
static ssize_t wake_read(void *buf, size_t len, uint64_t *wake)
{
	ssize_t n;

	while ((n = read(dev_fd, buf, len)) < 0) {
		if (errno != EINTR || stopping)
			return fail("read");
	}
	*wake = now_ns();
	return n;
}

/*
 * poll(2) for @p until it reports an event, retrying after a signal: 0, or -1
 * on an error (recorded by fail()) or once stopping.
 */
static int wait_pollin(struct pollfd *p)
{
	while (poll(p, 1, -1) < 0) {
		if (errno != EINTR || stopping)
			return fail("poll");
	}
	return 0;
}

/* ACK the record with IRQLAB_IOC_ACK on @fd; the sample gets latency and time. */
static void ack_seq(int fd, uint32_t seq, struct sample *s)
{
	struct irqlab_ack a = { .seq = seq };

	s->ack_ok = ioctl(fd, IRQLAB_IOC_ACK, &a) == 0;
	s->ack_ns = now_ns();
	if (s->ack_ok) {
		acks++;
		s->lat_ns = a.latency_ns;
	} else {
		ack_errors++;
	}
}

/* ACK each of the *cnt* records just read into rbuf first, then keep its timestamps. */
static void take_records(size_t cnt, uint64_t wake)
{
	size_t i;

	for (i = 0; i < cnt; i++) {
		struct irqlab_event *e = &rbuf[i];
		struct sample *s = next_sample();

		if (e->seq)
			ack_seq(dev_fd, e->seq, s);
		s->seq = e->seq;
		s->flags = e->flags;
		s->lost = e->lost;
		s->batch = (uint32_t)cnt;
		s->raise_ns = e->raise_ns;
		s->isr_dev_ns = e->isr_dev_ns;
		s->isr_ns = e->isr_ns;
		s->drv_wake_ns = e->wake_ns;
		s->wake_ns = wake;
	}
}

/* One read(2) of records; ACK each one first, then keep its timestamps.
 * Returns the records read, 0 on EAGAIN, -1 on an error (or EINTR). */
static int read_records(uint64_t wake)
{
	ssize_t n = read(dev_fd, rbuf, batch * sizeof(*rbuf));
	size_t cnt;

	if (n < 0) {
		if (errno == EAGAIN) {
			eagain++;
			return 0;
		}
		return fail("read");
	}
	if (!wake)	/* nonblock: the read that returned data is the wake-up */
		wake = now_ns();
	reads++;
	if (n == 0) {
		errno = 0;
		return fail("eof");
	}
	cnt = (size_t)n / sizeof(*rbuf);
	take_records(cnt, wake);
	return (int)cnt;
}

/* Read until EAGAIN (the fd is non-blocking); the records read, -1 on error. */
static int drain(uint64_t wake)
{
	int total = 0, n;

	while (!stopping) {
		n = read_records(wake);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		total += n;
	}
	return total;
}

static int open_dev(const char *dev, int nonblock)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC | (nonblock ? O_NONBLOCK : 0));

	if (fd < 0)
		die(dev);
	return fd;
}

static void loop_read(void)
{
	while (!done()) {
		uint64_t wake;
		ssize_t n = wake_read(rbuf, batch * sizeof(*rbuf), &wake);
		size_t cnt;

		if (n < 0)
			return;
		wakeups++;
		reads++;
		cnt = (size_t)n / sizeof(*rbuf);
		if (!cnt) {
			errno = 0;
			fail("eof");
			return;
		}
		take_records(cnt, wake);
	}
}

static void loop_nonblock(long interval_us)
{
	struct timespec pause = {
		.tv_sec = interval_us / 1000000,
		.tv_nsec = (interval_us % 1000000) * 1000,
	};

	while (!done()) {
		int n = read_records(0);

		if (n < 0)
			return;
		if (n == 0) {
			if (interval_us)
				nanosleep(&pause, NULL);
			continue;
		}
		wakeups++;
	}
}

/*
 * poll/select/epoll: wait, then one read (epoll-et: until EAGAIN), as the agent.
 * Returns the records read, or -1 on an error (recorded): the loop then ends.
 */
static int after_ready(uint64_t wake, int drain_all)
{
	int n;

	wakeups++;
	n = drain_all ? drain(wake) : read_records(wake);
	if (n == 0)
		spurious++;
	return n;
}

static void loop_poll(void)
{
	struct pollfd p = { .fd = dev_fd, .events = POLLIN | POLLRDNORM };

	while (!done()) {
		if (wait_pollin(&p) < 0 || after_ready(now_ns(), 0) < 0)
			return;
	}
}

static void loop_select(void)
{
	while (!done()) {
		fd_set r, x;

		FD_ZERO(&r);
		FD_ZERO(&x);
		FD_SET(dev_fd, &r);
		FD_SET(dev_fd, &x);
		if (select(dev_fd + 1, &r, NULL, &x, NULL) < 0) {
			if (errno == EINTR && !stopping)
				continue;
			fail("select");
			return;
		}
		if (after_ready(now_ns(), 0) < 0)
			return;
	}
}

static void loop_epoll(int edge)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLRDNORM | (edge ? EPOLLET : 0),
		.data.fd = dev_fd,
	};
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, dev_fd, &ev) < 0)
		die("epoll");
	while (!done()) {
		struct epoll_event out;

		if (epoll_wait(ep, &out, 1, -1) < 0) {
			if (errno == EINTR && !stopping)
				continue;
			fail("epoll_wait");
			break;
		}
		if (after_ready(now_ns(), edge) < 0)
			break;
	}
	close(ep);
}

/* SIGIO / F_SETSIG: the signal is blocked and taken with sigwaitinfo; drain. */
static void loop_async(int signo)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, signo);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	if (fcntl(dev_fd, F_SETOWN, getpid()) < 0)
		die("F_SETOWN");
	if (signo != SIGIO && fcntl(dev_fd, F_SETSIG, signo) < 0)
		die("F_SETSIG");
	if (fcntl(dev_fd, F_SETFL, fcntl(dev_fd, F_GETFL) | O_ASYNC) < 0)
		die("O_ASYNC");
	ready();
	while (!done()) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);
		uint64_t wake = now_ns();

		if (sig < 0) {
			if (errno == EINTR)
				continue;
			fail("sigwaitinfo");
			return;
		}
		if (sig != signo) {
			stopping = 1;
			break;
		}
		sigs++;
		wakeups++;
		if (signo != SIGIO && si.si_fd != dev_fd) {
			spurious++;
			continue;
		}
		if (drain(wake) == 0)
			spurious++;
	}
}

static void loop_eventfd(void)
{
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	__s32 arg = efd;

	if (efd < 0 || ioctl(dev_fd, IRQLAB_IOC_SET_EVENTFD, &arg) < 0)
		die("eventfd");
	ready();
	while (!done()) {
		struct pollfd p = { .fd = efd, .events = POLLIN };
		uint64_t wake, count;

		if (wait_pollin(&p) < 0)
			break;
		wake = now_ns();
		if (read(efd, &count, sizeof(count)) != sizeof(count)) {
			spurious++;
			continue;
		}
		wakeups++;
		if (drain(wake) == 0)
			spurious++;
	}
	arg = -1;
	ioctl(dev_fd, IRQLAB_IOC_SET_EVENTFD, &arg);
	close(efd);
}

/* --- ACK by order: the counting file and gpio-cdev ---------------------------- */

static uint32_t first_seq;
static const char *ack_dev;

static void open_ack_fd(void)
{
	__u32 none = 0;

	if (!ack_dev || !first_seq) {
		errno = EINVAL;
		die("-A DEV and -F SEQ are required");
	}
	ack_fd = open_dev(ack_dev, 1);
	if (ioctl(ack_fd, IRQLAB_IOC_SET_SOURCES, &none) < 0)
		die("SET_SOURCES");
}

static void loop_count(void)
{
	uint64_t counted = 0;

	open_ack_fd();
	ready();
	while (!done()) {
		uint32_t c;
		uint64_t wake;
		ssize_t n = wake_read(&c, sizeof(c), &wake);

		if (n < 0)
			return;
		if (n != sizeof(c)) {
			errno = 0;
			fail("short count read");
			return;
		}
		wakeups++;
		reads++;
		for (uint32_t k = 0; k < c; k++) {
			struct sample *s = next_sample();

			s->seq = first_seq + (uint32_t)counted + k;
			s->batch = c;
			s->wake_ns = wake;
			ack_seq(ack_fd, s->seq, s);
		}
		counted += c;
	}
}

/* The first /dev/gpiochipN whose label starts with "irqlab-", as the agent's find_chip. */
static const char *find_chip(void)
{
	static char dev[300];
	struct gpiochip_info ci;
	struct dirent *de;
	DIR *d = opendir("/dev");
	int found = 0;

	if (!d)
		die("/dev");
	while (!found && (de = readdir(d))) {
		int fd;

		if (strncmp(de->d_name, "gpiochip", 8))
			continue;
		snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
		fd = open(dev, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		found = ioctl(fd, GPIO_GET_CHIPINFO_IOCTL, &ci) == 0 &&
			!strncmp(ci.label, "irqlab-", 7);
		close(fd);
	}
	closedir(d);
	if (!found) {
		errno = ENOENT;
		die("no gpio chip labelled irqlab-*");
	}
	return dev;
}

static void loop_gpio(const char *chip, unsigned int line, unsigned int buffer)
{
	struct gpio_v2_line_request req;
	struct gpio_v2_line_event ev[64];
	int cfd = open(chip, O_RDWR | O_CLOEXEC);

	if (cfd < 0)
		die(chip);
	open_ack_fd();
	memset(&req, 0, sizeof(req));
	req.offsets[0] = line;
	req.num_lines = 1;
	req.event_buffer_size = buffer;
	req.config.flags = GPIO_V2_LINE_FLAG_INPUT | GPIO_V2_LINE_FLAG_EDGE_RISING |
			   GPIO_V2_LINE_FLAG_EDGE_FALLING;
	snprintf(req.consumer, sizeof(req.consumer), "irqlab-respond");
	if (ioctl(cfd, GPIO_V2_GET_LINE_IOCTL, &req) < 0)
		die("GPIO_V2_GET_LINE_IOCTL");
	close(cfd);
	dev_fd = req.fd;
	fcntl(dev_fd, F_SETFL, fcntl(dev_fd, F_GETFL) | O_NONBLOCK);
	ready();
	while (!done()) {
		struct pollfd p = { .fd = dev_fd, .events = POLLIN };
		uint64_t wake;

		if (wait_pollin(&p) < 0)
			return;
		wake = now_ns();
		wakeups++;
		for (;;) {
			ssize_t n = read(dev_fd, ev, sizeof(ev));
			size_t cnt;

			if (n < 0) {
				if (errno == EAGAIN)
					break;
				fail("read");
				return;
			}
			reads++;
			cnt = (size_t)n / sizeof(ev[0]);
			for (size_t i = 0; i < cnt; i++) {
				struct sample *s = next_sample();

				s->seq = first_seq + ev[i].seqno - 1;
				ack_seq(ack_fd, s->seq, s);
				s->flags = ev[i].id;
				s->lost = ev[i].seqno;
				s->batch = (uint32_t)cnt;
				s->gpio_ts_ns = ev[i].timestamp_ns;
				s->wake_ns = wake;
			}
		}
	}
}

/* --- UIO: the user-space driver through the mapped BAR ------------------------ */

static volatile uint32_t *bar;

static uint32_t rd(unsigned int reg)
{
	return bar[reg / 4];
}

static void wr(unsigned int reg, uint32_t v)
{
	bar[reg / 4] = v;
}

static uint64_t rd64(unsigned int lo, unsigned int hi)
{
	uint64_t v = rd(lo);	/* reading _LO latches _HI */

	return v | ((uint64_t)rd(hi) << 32);
}

static int find_uio(const char *name, char *out, size_t len)
{
	DIR *d = opendir("/sys/class/uio");
	struct dirent *de;
	int found = 0;

	if (!d)
		return 0;
	while (!found && (de = readdir(d))) {
		char p[512], buf[128] = "";
		FILE *f;

		if (strncmp(de->d_name, "uio", 3))
			continue;
		snprintf(p, sizeof(p), "/sys/class/uio/%s/name", de->d_name);
		f = fopen(p, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f)) {
			buf[strcspn(buf, "\n")] = 0;
			if (!name || !strcmp(buf, name)) {
				snprintf(out, len, "%s", de->d_name);
				found = 1;
			}
		}
		fclose(f);
	}
	closedir(d);
	return found;
}

static void uio_reenable(int cfd)
{
	uint16_t cmd;

	if (cfd < 0) {	/* the driver's UIO mode: IRQ_ENABLE through the mapping */
		wr(IRQLAB_REG_IRQ_ENABLE, IRQLAB_SRC_ALL);
		return;
	}
	/* uio_pci_generic: clear the PCI 2.3 Interrupt Disable bit in config space */
	if (pread(cfd, &cmd, 2, PCI_COMMAND_REG) != 2)
		die("config read");
	cmd &= (uint16_t)~PCI_COMMAND_INTX_DIS;
	if (pwrite(cfd, &cmd, 2, PCI_COMMAND_REG) != 2)
		die("config write");
}

static void loop_uio(const char *name, const char *map, const char *reenable)
{
	char uio[256], p[512];
	int cfd = -1;
	uint32_t last;
	void *m;

	if (!find_uio(name, uio, sizeof(uio))) {
		errno = ENOENT;
		die("no such uio device");
	}
	snprintf(p, sizeof(p), "/dev/%s", uio);
	dev_fd = open_dev(p, 0);
	if (!strcmp(reenable, "config")) {
		snprintf(p, sizeof(p), "/sys/class/uio/%s/device/config", uio);
		cfd = open(p, O_RDWR | O_CLOEXEC);
		if (cfd < 0)
			die(p);
	}
	if (!strcmp(map, "resource0")) {
		int mfd;

		snprintf(p, sizeof(p), "/sys/class/uio/%s/device/resource0", uio);
		mfd = open(p, O_RDWR | O_SYNC | O_CLOEXEC);
		if (mfd < 0)
			die(p);
		m = mmap(NULL, IRQLAB_BAR0_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
		close(mfd);
	} else {
		m = mmap(NULL, IRQLAB_BAR0_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, dev_fd, 0);
	}
	if (m == MAP_FAILED)
		die("mmap");
	bar = m;
	snprintf(p, sizeof(p), "/sys/class/uio/%s/event", uio);
	{
		FILE *f = fopen(p, "r");

		if (!f || fscanf(f, "%u", &last) != 1)
			die(p);
		fclose(f);
	}
	wr(IRQLAB_REG_IRQ_ENABLE, IRQLAB_SRC_ALL);
	uio_reenable(cfd);
	ready();
	while (!done()) {
		uint32_t count, depth, k, handled = 0;
		uint64_t wake;
		ssize_t n = wake_read(&count, sizeof(count), &wake);
		uint64_t dev_wake = rd64(IRQLAB_REG_TIME_LO, IRQLAB_REG_TIME_HI);
		size_t first = nsamples;

		if (n < 0)
			break;
		wakeups++;
		reads++;
		if (count == last)
			spurious++;
		last = count;
		wr(IRQLAB_REG_GPIO_STATUS, rd(IRQLAB_REG_GPIO_STATUS));
		wr(IRQLAB_REG_IRQ_STATUS, IRQLAB_SRC_ALL & ~(1u << IRQLAB_SRC_GPIO));
		depth = rd(IRQLAB_REG_EVQ_DEPTH);
		for (k = 0; k < depth; k++) {
			uint32_t info = rd(IRQLAB_REG_EVQ_HEAD_INFO), seq;
			struct sample *s;

			if (!(info & IRQLAB_EVINFO_VALID))
				break;
			s = next_sample();
			seq = rd(IRQLAB_REG_EVQ_HEAD_SEQ);
			s->raise_ns = rd64(IRQLAB_REG_EVQ_HEAD_TS_LO, IRQLAB_REG_EVQ_HEAD_TS_HI);
			wr(IRQLAB_REG_EVQ_POP, 0);
			wr(IRQLAB_REG_ACK, seq);
			s->ack_ok = rd(IRQLAB_REG_ACK_SEQ) == seq;
			if (s->ack_ok) {
				s->lat_ns = rd64(IRQLAB_REG_ACK_LAT_LO, IRQLAB_REG_ACK_LAT_HI);
				acks++;
			} else {
				ack_errors++;
			}
			s->ack_ns = now_ns();
			s->seq = seq;
			s->flags = info & IRQLAB_EVINFO_DROPPED ? IRQLAB_EVF_DEV_DROPPED : 0;
			s->wake_ns = wake;
			s->dev_wake_ns = dev_wake;
			handled++;
		}
		for (size_t i = first; i < nsamples; i++)
			samples[i].batch = handled;
		if (!handled)
			spurious++;
		uio_reenable(cfd);
	}
	clock_sync(&sync_end);	/* through the mapping, before it goes */
	bar = NULL;
	munmap(m, IRQLAB_BAR0_SIZE);
	if (cfd >= 0)
		close(cfd);
}

/* --- the clock offset: guest CLOCK_MONOTONIC vs the device clock ------------------ */

/*
 * Device clock - guest CLOCK_MONOTONIC: of SYNC_READS readings of the device
 * clock, each bracketed by two CLOCK_MONOTONIC readings, the narrowest bracket
 * wins; offset = device - bracket midpoint, error = half the bracket.  Taken
 * once the path is armed (no interrupts yet) and after the run, so drift shows
 * and can be interpolated.  Through the driver (IRQLAB_IOC_GET_CLOCK, on the
 * path's irqlab file or its ACK file) or, for UIO, the TIME register of the
 * mapped BAR (reading TIME_LO latches TIME_HI; nothing else reads it then).
 */
#define SYNC_READS 64


static int clock_read(struct irqlab_clock *c)
{
	if (bar) {
		uint32_t lo;

		c->mono_before_ns = now_ns();
		lo = rd(IRQLAB_REG_TIME_LO);
		c->mono_after_ns = now_ns();
		c->dev_ns = ((uint64_t)rd(IRQLAB_REG_TIME_HI) << 32) | lo;
		return 0;
	}
	return ioctl(ack_fd >= 0 ? ack_fd : dev_fd, IRQLAB_IOC_GET_CLOCK, c);
}

static void clock_sync(struct clock_sync *cs)
{
	int i;

	for (i = 0; i < SYNC_READS; i++) {
		struct irqlab_clock c;
		uint64_t bracket;

		if (clock_read(&c) < 0)
			return;
		bracket = c.mono_after_ns - c.mono_before_ns;
		if (!cs->ok || bracket < cs->bracket_ns) {
			cs->ok = 1;
			cs->bracket_ns = bracket;
			cs->mono_ns = c.mono_before_ns + bracket / 2;
			cs->offset_ns = (int64_t)(c.dev_ns - cs->mono_ns);
		}
	}
}

static void print_sync(const char *name, struct clock_sync *cs)
{
	if (!cs->ok) {
		printf("\"%s\":null,", name);
		return;
	}
	printf("\"%s\":{\"mono_ns\":%llu,\"offset_ns\":%lld,\"bracket_ns\":%llu},", name,
	       (unsigned long long)cs->mono_ns, (long long)cs->offset_ns,
	       (unsigned long long)cs->bracket_ns);
}

/* --- output ----------------------------------------------------------------------- */

static void print_json(void)
{
	struct timespec cpu;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
	printf("{\"path\":\"%s\",\"exit\":\"%s\",\"errno\":%d,", path_name, exit_reason,
	       exit_errno);
	printf("\"wakeups\":%lu,\"reads\":%lu,\"eagain\":%lu,\"spurious\":%lu,", wakeups,
	       reads, eagain, spurious);
	print_sync("clock_start", &sync_start);
	print_sync("clock_end", &sync_end);
	printf("\"acks\":%lu,\"ack_errors\":%lu,\"signals\":%lu,\"cpu_ns\":%llu,", acks,
	       ack_errors, sigs,
	       (unsigned long long)cpu.tv_sec * 1000000000ull + (unsigned long long)cpu.tv_nsec);
	printf("\"fields\":[\"seq\",\"flags\",\"lost\",\"batch\",\"raise_ns\",\"isr_dev_ns\","
	       "\"isr_ns\",\"drv_wake_ns\",\"wake_ns\",\"ack_ns\",\"ack_latency_ns\","
	       "\"dev_wake_ns\",\"gpio_ts_ns\"],\"rows\":[");
	for (size_t i = 0; i < nsamples; i++) {
		struct sample *s = &samples[i];

		printf("%s[%u,%u,%u,%u,%llu,%llu,%llu,%llu,%llu,%llu,", i ? "," : "", s->seq,
		       s->flags, s->lost, s->batch, (unsigned long long)s->raise_ns,
		       (unsigned long long)s->isr_dev_ns, (unsigned long long)s->isr_ns,
		       (unsigned long long)s->drv_wake_ns, (unsigned long long)s->wake_ns,
		       (unsigned long long)s->ack_ns);
		if (s->ack_ok)
			printf("%llu", (unsigned long long)s->lat_ns);
		else
			printf("null");
		printf(",%llu,%llu]", (unsigned long long)s->dev_wake_ns,
		       (unsigned long long)s->gpio_ts_ns);
	}
	printf("]}\n");
}

/* The path is armed: measure the clock offset, then tell the caller. */
static void ready(void)
{
	clock_sync(&sync_start);
	printf("ready\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *dev = NULL, *uio_name = NULL, *map = "uio", *reenable = "device";
	unsigned int line = 0, buffer = 1024;
	long interval_us = 1000;
	int setsig = 1, opt, dev_given = 0;
	struct sigaction sa;

	while ((opt = getopt(argc, argv, "d:n:b:i:s:A:F:u:m:r:l:B:")) != -1) {
		switch (opt) {
		case 'd': dev = optarg; dev_given = 1; break;
		case 'n': limit = strtoul(optarg, NULL, 0); break;
		case 'b': batch = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'i': interval_us = strtol(optarg, NULL, 0); break;
		case 's': setsig = atoi(optarg); break;
		case 'A': ack_dev = optarg; break;
		case 'F': first_seq = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'u': uio_name = optarg; break;
		case 'm': map = optarg; break;
		case 'r': reenable = optarg; break;
		case 'l': line = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'B': buffer = (unsigned int)strtoul(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: irqlab-respond PATH [options] (see the source)\n");
			return 2;
		}
	}
	if (optind != argc - 1 || !batch || interval_us < 0) {
		fprintf(stderr, "usage: irqlab-respond PATH [options] (see the source)\n");
		return 2;
	}
	path_name = argv[optind];
	if (!dev)
		dev = !strcmp(path_name, "count") ? "/dev/irqlab0-count" : "/dev/irqlab0";

	/* The agent blocks SIGIO and the RT signals in its threads: start clean. */
	sigemptyset(&sa.sa_mask);
	sigprocmask(SIG_SETMASK, &sa.sa_mask, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;	/* no SA_RESTART: a blocked syscall returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	/* Reserve memory up front: no page faults or allocations in the hot path. */
	cap = limit ? limit + 64 : 1 << 16;
	samples = calloc(cap, sizeof(*samples));
	rbuf = calloc(batch, sizeof(*rbuf));
	if (!samples || !rbuf)
		die("calloc");
	mlockall(MCL_CURRENT | MCL_FUTURE);

	if (!strcmp(path_name, "uio")) {
		loop_uio(uio_name, map, reenable);
	} else if (!strcmp(path_name, "gpio-cdev")) {
		loop_gpio(dev_given ? dev : find_chip(), line, buffer);
	} else {
		int blocking = !strcmp(path_name, "read") || !strcmp(path_name, "count");

		dev_fd = open_dev(dev, !blocking);
		if (!strcmp(path_name, "sigio")) {
			loop_async(SIGIO);
		} else if (!strcmp(path_name, "setsig")) {
			loop_async(SIGRTMIN + setsig);
		} else if (!strcmp(path_name, "eventfd")) {
			loop_eventfd();
		} else if (!strcmp(path_name, "count")) {
			loop_count();
		} else {
			ready();
			if (!strcmp(path_name, "read"))
				loop_read();
			else if (!strcmp(path_name, "nonblock"))
				loop_nonblock(interval_us);
			else if (!strcmp(path_name, "poll"))
				loop_poll();
			else if (!strcmp(path_name, "select"))
				loop_select();
			else if (!strcmp(path_name, "epoll-lt"))
				loop_epoll(0);
			else if (!strcmp(path_name, "epoll-et"))
				loop_epoll(1);
			else {
				fprintf(stderr, "irqlab-respond: unknown path %s\n", path_name);
				return 2;
			}
		}
	}
	/* a stop ends a run that met no error before it */
	if (stopping && !strcmp(exit_reason, "count") && (!limit || nsamples < limit))
		exit_reason = "stopped";
	if (!sync_end.ok)
		clock_sync(&sync_end);
	print_json();
	return strcmp(exit_reason, "count") && strcmp(exit_reason, "stopped") ? 1 : 0;
}
