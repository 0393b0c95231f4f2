# leakmon-gateway as a container image: the static binary and nothing else. Built by
# scripts/images; deploy/stack.yml runs it beside every manager with the Docker socket.
FROM scratch
COPY leakmon-gateway /usr/bin/leakmon-gateway
COPY empty/ /var/lib/leakmon/
COPY empty/ /etc/leakmon/
ENV LEAKMON_LOG=info
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/leakmon-gateway"]
