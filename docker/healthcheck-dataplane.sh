#!/bin/bash
# Container health check of the data plane: GET /stats on the admin listener
# (edge.admin, SWITCHYARD_ADMIN_ADDR) must answer 200 within 2 s. Bash's
# /dev/tcp: no curl in the image.
addr=${SWITCHYARD_ADMIN_ADDR:-127.0.0.1:9901}
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" || exit 1
# One write: the endpoint answers what its first read got and closes, and
# bash's printf flushes line by line (a later line would meet a reset).
printf 'GET /stats HTTP/1.0\r\nHost: %s\r\n\r\n' "$addr" |
    dd iflag=fullblock bs=4096 count=1 status=none >&3 || exit 1
IFS=' ' read -r -t 2 _ code _ <&3 || exit 1
[ "$code" = 200 ]
