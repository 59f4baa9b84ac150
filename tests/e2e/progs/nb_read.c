// SPDX-License-Identifier: GPL-2.0
/*
 * An O_NONBLOCK read(2) and FLUSH while another thread's read of the same
 * file holds the driver's read lock across a faulting copy_to_user(): the
 * destination page is registered with userfaultfd and the fault is served
 * only after both calls returned.  They must fail with EAGAIN at once, not
 * sleep until the other reader is done (a 5 s alarm ends a sleeping one).
 *
 * Usage: nb_read DEV READY_FILE.  Creates READY_FILE once DEV is open, waits
 * for one record, then prints one JSON line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include <linux/irqlab.h>

static int fd;
static char *page;
static ssize_t a_ret;
static int a_errno;

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void on_alarm(int sig)
{
	(void)sig;
}

static void *held_reader(void *arg)
{
	(void)arg;
	a_ret = read(fd, page, sizeof(struct irqlab_event));
	a_errno = errno;
	return NULL;
}

static int fail(const char *what)
{
	printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { 0 };
	struct uffdio_zeropage zp = { 0 };
	struct uffd_msg msg;
	struct irqlab_event ev;
	struct sigaction sa;
	struct pollfd pfd;
	double t0, read_s, flush_s;
	int uffd, read_errno, flush_errno, flags;
	long psz = sysconf(_SC_PAGESIZE);
	pthread_t t;
	ssize_t r;

	if (argc != 3)
		return 2;
	fd = open(argv[1], O_RDWR);
	if (fd < 0)
		return fail("open");
	if (close(open(argv[2], O_WRONLY | O_CREAT, 0644)))
		return fail("ready");
	pfd.fd = fd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 60000) != 1)
		return fail("poll");

	uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0)
		return fail("userfaultfd");
	if (ioctl(uffd, UFFDIO_API, &api))
		return fail("UFFDIO_API");
	page = mmap(NULL, psz, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return fail("mmap");
	reg.range.start = (unsigned long)page;
	reg.range.len = psz;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		return fail("UFFDIO_REGISTER");

	if (pthread_create(&t, NULL, held_reader, NULL))
		return fail("pthread_create");
	/* the reader faults in copy_to_user(), holding the file's read lock */
	pfd.fd = uffd;
	pfd.events = POLLIN;
	if (poll(&pfd, 1, 60000) != 1)
		return fail("poll uffd");
	if (read(uffd, &msg, sizeof(msg)) != sizeof(msg) ||
	    msg.event != UFFD_EVENT_PAGEFAULT)
		return fail("uffd event");

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;	/* no SA_RESTART: a sleeper gets EINTR */
	sigaction(SIGALRM, &sa, NULL);
	flags = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, flags | O_NONBLOCK);

	alarm(5);
	t0 = now();
	r = read(fd, &ev, sizeof(ev));
	read_errno = r < 0 ? errno : 0;
	read_s = now() - t0;
	alarm(5);
	t0 = now();
	r = ioctl(fd, IRQLAB_IOC_FLUSH);
	flush_errno = r < 0 ? errno : 0;
	flush_s = now() - t0;
	alarm(0);

	zp.range.start = (unsigned long)page;
	zp.range.len = psz;
	if (ioctl(uffd, UFFDIO_ZEROPAGE, &zp))
		return fail("UFFDIO_ZEROPAGE");
	pthread_join(t, NULL);
	printf("{\"read_errno\": \"%s\", \"read_s\": %.3f, \"flush_errno\": \"%s\", "
	       "\"flush_s\": %.3f, \"held_read\": %zd, \"held_errno\": %d}\n",
	       read_errno ? strerrorname_np(read_errno) : "",
	       read_s, flush_errno ? strerrorname_np(flush_errno) : "",
	       flush_s, a_ret, a_ret < 0 ? a_errno : 0);
	return 0;
}
