# leakmon-agent as a container image: the static binary and nothing else (no shell, no libc).
# Built by scripts/images from target/<triple>/release/leakmon-agent; run it as
# deploy/stack.yml does: the host's /proc, /sys and / mounted read-only under /host, and the
# Docker socket.
FROM scratch
COPY leakmon-agent /usr/bin/leakmon-agent
COPY empty/ /var/lib/leakmon/
COPY empty/ /etc/leakmon/
ENV LEAKMON_AGENT__HOST__PROC_ROOT=/host/proc \
    LEAKMON_AGENT__HOST__SYS_ROOT=/host/sys \
    LEAKMON_AGENT__HOST__ROOTFS=/host/root \
    LEAKMON_LOG=info
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/leakmon-agent"]
