"""The watched client of the label-bounds tests: requests over one
keep-alive HTTP/1.1 connection (http.client).

Usage: labels_client.py PORT. Prints "ready", then per line on stdin:
  codes FIRST LAST   GET /codes/<code> for every code from FIRST to LAST
  methods M,M,...    each method on /methods
  exit
Each answers the number of responses it read.
"""
import http.client
import sys

conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))


def request(method, path):
    conn.request(method, path)
    conn.getresponse().read()


def main():
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "codes":
            first, last = int(cmd[1]), int(cmd[2])
            for code in range(first, last + 1):
                request("GET", f"/codes/{code}")
            print(last - first + 1, flush=True)
        elif cmd[0] == "methods":
            methods = cmd[1].split(",")
            for method in methods:
                request(method, "/methods")
            print(len(methods), flush=True)
        elif cmd[0] == "exit":
            return


if __name__ == "__main__":
    main()
