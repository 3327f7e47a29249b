# syntax=docker/dockerfile:1
FROM alpine
RUN <<EOF
echo hello
echo $HOME
EOF
RUN <<-"EOT" bash
	echo tabs stripped
	EOT
RUN <<FILE1 cat > /f1 && 3<<'FILE2' cat > /f2
one
FILE1
two $x
FILE2
COPY <<a <<b /dir/
A
a
B
b
RUN <<EOF
#!/usr/bin/env python3
print("hi")
EOF
RUN ["echo", "<<NOT"]
ONBUILD RUN <<X
trigger body
X
CMD done
