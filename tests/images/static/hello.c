/* A tiny program linked statically: it needs no libc, loader or shell from the image. */
#include <stdio.h>

int main(int argc, char **argv) {
    (void)argv;
    printf("hello from a FROM scratch image (%d args)\n", argc - 1);
    return 0;
}
