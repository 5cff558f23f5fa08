#!/bin/sh
# Runs in the SVM test host (test_svm.mode=agent), one TCP connection each
# (busybox nc -ll -e): reads one request line and answers on the connection.
#   run [VAR=VALUE...] -- PROGRAM [ARG...]   runs /tests/PROGRAM, stdout and
#       stderr back on the connection, then "@@@ exit <status>". The program
#       is killed when the connection closes first.
#   poweroff                                 powers the SVM host off
read -r line
set -- $line
case $1 in
    poweroff) echo "@@@ exit 0"; sync; poweroff -f ;;
    run) shift ;;
    *) echo "@@@ bad request: $line"; echo "@@@ exit 127"; exit 0 ;;
esac
envs=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs="$envs $1"; shift; done
shift
program=/tests/$1
shift
exec 3<&0
env $envs "$program" "$@" < /dev/null 2>&1 &
pid=$!
# (an & list's stdin is /dev/null unless redirected: read the connection via fd 3)
(cat <&3 > /dev/null; kill -9 $pid 2> /dev/null) &
wait $pid
echo "@@@ exit $?"
