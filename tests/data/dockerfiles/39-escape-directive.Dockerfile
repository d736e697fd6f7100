# escape=`
FROM debian:bookworm
RUN echo one `
    two > /words
USER 1000
CMD ["cat", "/words"]
