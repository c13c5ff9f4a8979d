<?php
// Parser zoo: PHP 8.2 (Debian php-cli) built-in web server, run as a router script:
//   php -S 127.0.0.1:PORT -t EMPTY_DOCROOT echo.php
// with Debian's stock /etc/php/8.2/cli/php.ini (variables_order "GPCS", request_order "GP",
// max_input_vars 1000, max_input_nesting_level 64, post_max_size 8M, display_errors Off).
// PHP fills $_GET/$_POST/$_REQUEST before this script runs; we only report them.
// Startup warnings PHP raised while filling them (e.g. "Input variables exceeded 1000") are
// reported as parse_error via error_get_last().
// Strings that are not valid UTF-8 become {"__bytes_b64": "<base64 of the raw bytes>"}; a map key
// that is not valid UTF-8 becomes the string "__bytes_b64:<base64>".
$startup_error = error_get_last();

$seq_file = getenv('ZOO_SEQ_FILE') ?: sys_get_temp_dir() . '/zoo-php-seq';
$fh = fopen($seq_file, 'c+');
flock($fh, LOCK_EX);
$seq = (int) stream_get_contents($fh) + 1;
ftruncate($fh, 0);
rewind($fh);
fwrite($fh, (string) $seq);
fflush($fh);
flock($fh, LOCK_UN);
fclose($fh);

function zoo_str($s) {
    return preg_match('//u', $s) === 1 ? $s : ['__bytes_b64' => base64_encode($s)];
}
function zoo_key($k) {
    if (is_int($k) || preg_match('//u', $k) === 1) return $k;
    return '__bytes_b64:' . base64_encode($k);
}
function zoo($v) {
    if (is_string($v)) return zoo_str($v);
    if (!is_array($v)) return $v;
    $out = [];
    foreach ($v as $k => $x) $out[zoo_key($k)] = zoo($x);
    return $out;
}
// Top-level maps are always JSON objects (an empty $_GET is {} not []); nested PHP arrays are
// encoded by json_encode's own rule (a list when the keys are 0..n-1 in order, else an object).
function zoo_map($a) {
    return (object) zoo($a);
}

$headers = [];
foreach ($_SERVER as $k => $v) {
    if (is_string($k) && (strncmp($k, 'HTTP_', 5) === 0 || $k === 'CONTENT_TYPE' || $k === 'CONTENT_LENGTH'))
        $headers[zoo_key($k)] = [zoo_str((string) $v)];
}
$uri = $_SERVER['REQUEST_URI'] ?? '';
$route = isset($_SERVER['PATH_INFO']) ? $_SERVER['PATH_INFO'] : explode('?', $uri, 2)[0];

$out = [
    'framework' => 'php',
    'seq' => $seq,
    'method' => zoo_str($_SERVER['REQUEST_METHOD'] ?? ''),
    'route' => zoo_str($route),
    'script_name' => '',
    'query' => zoo_map($_GET),
    'form' => zoo_map($_POST),
    'params' => zoo_map($_REQUEST),
    'headers' => (object) $headers,
    'parse_error' => $startup_error === null ? null : zoo_str($startup_error['message']),
];
header('Content-Type: application/json');
echo json_encode($out, JSON_THROW_ON_ERROR);
