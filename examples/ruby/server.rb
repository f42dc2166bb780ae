# The Ruby example: detected by the Gemfile, run by the Procfile, on $PORT.
require "socket"

greeting = ENV.fetch("GREETING", "Hello")
server = TCPServer.new("0.0.0.0", ENV.fetch("PORT", "5000").to_i)
loop do
  client = server.accept
  while (line = client.gets) && line != "\r\n"; end
  body = "#{greeting} from Ruby #{RUBY_VERSION}\n"
  client.print "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" \
               "Content-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n#{body}"
  client.close
end
