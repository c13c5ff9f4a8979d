# Parser zoo: Rack 2.2 (Debian ruby-rack) on WEBrick (Debian ruby-webrick), started with
# Rack::Handler::WEBrick directly (no rackup, so no Lint/ShowExceptions middleware in the way).
# Rack::Request with its default query parser: #GET as "query", #POST as "form", #params as
# "params". Rack's defaults that matter: the GET/POST separators, key_space_limit, param depth
# limit, and which methods/content types #POST parses. An exception raised by one of the three
# accessors is reported in "parse_error" (as "GET: Class: message; ...") and that view is null.
# Strings that are not valid UTF-8 become {"__bytes_b64": "<base64>"}; a hash key that is not
# valid UTF-8 becomes "__bytes_b64:<base64>"; an object that is neither (a multipart upload's
# Tempfile) becomes {"__object": "ClassName"}.
# Usage: ruby echo_rack.rb PORT
require 'json'
require 'rack'
require 'rack/handler/webrick'

def zoo_str(s)
  u = s.dup.force_encoding(Encoding::UTF_8)
  u.valid_encoding? ? u : { '__bytes_b64' => [s].pack('m0') }
end

def zoo_key(k)
  v = zoo_str(k.to_s)
  v.is_a?(Hash) ? "__bytes_b64:#{v['__bytes_b64']}" : v
end

def zoo(v)
  case v
  when String then zoo_str(v)
  when Hash then v.each_with_object({}) { |(k, x), h| h[zoo_key(k)] = zoo(x) }
  when Array then v.map { |x| zoo(x) }
  when nil, true, false, Integer then v
  when Symbol then zoo_str(v.to_s)
  else { '__object' => v.class.name }
  end
end

seq = 0
lock = Mutex.new
app = lambda do |env|
  n = lock.synchronize { seq += 1 }
  req = Rack::Request.new(env)
  errors = []
  views = {}
  [['GET', :GET], ['POST', :POST], ['params', :params]].each do |label, m|
    begin
      views[m] = zoo(req.public_send(m))
    rescue StandardError => e
      views[m] = nil
      errors << "#{label}: #{e.class}: #{e.message}"
    end
  end
  headers = {}
  env.each do |k, v|
    next unless k.is_a?(String) && (k.start_with?('HTTP_') || k == 'CONTENT_TYPE' || k == 'CONTENT_LENGTH')
    headers[zoo_key(k)] = [zoo(v)]
  end
  body = JSON.generate(
    'framework' => 'rack',
    'seq' => n,
    'method' => zoo(env['REQUEST_METHOD']),
    'route' => zoo(env['PATH_INFO']),
    'script_name' => zoo(env['SCRIPT_NAME']),
    'query' => views[:GET],
    'form' => views[:POST],
    'params' => views[:params],
    'headers' => headers,
    'parse_error' => errors.empty? ? nil : zoo_str(errors.join('; '))
  )
  [200, { 'Content-Type' => 'application/json', 'Content-Length' => body.bytesize.to_s }, [body]]
end

Rack::Handler::WEBrick.run(app, Host: '127.0.0.1', Port: Integer(ARGV.fetch(0)))
