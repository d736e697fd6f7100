#!/bin/sh
# Stand-in application: prints its greeting and arguments.
echo "${APP_GREETING:-hi} from $(id -un): $*"
