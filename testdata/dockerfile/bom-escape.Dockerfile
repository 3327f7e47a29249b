# ESCAPE = `
FROM alpine
RUN dir c:\
COPY a `
  b c:\
