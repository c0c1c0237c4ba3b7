// The workflow engine's "Caching Authentication Tokens" pattern, line by line, with `await`
// where the engine's calls are asynchronous here. In the engine, SetSecret and GetSecret are
// built-ins; on tresor they are imported from the SDK (the engine's other built-ins are in
// ./engine.ts).
import { GetSecret, SetSecret } from '@tresor/sdk';
import { CancelAction, InvokeRestMethod, Log, type RestResponse } from './engine.js';

/** One-time setup: store the API's login (the engine's "Set secret from external data"). */
export async function configure(username: string, password: string): Promise<void> {
  var saved = await SetSecret('ExternalApiUsername', username, 'External API user');
  if (saved) {
    Log('Information', 'External API user saved securely');
  }
  saved = await SetSecret('ExternalApiPassword', password, 'External API password');
  if (!saved) {
    Log('Error', 'Failed to save the password');
    CancelAction('Secret update failed');
  }
}

export async function fetchData(apiUrl = 'https://api.external-service.com'): Promise<any> {
  // External API configuration
  var headers: Record<string, string> = { 'Content-Type': 'application/json' };

  // Try to use cached JWT first
  var cachedJwt = await GetSecret('ExternalApiJWT');
  var apiResponse: RestResponse | undefined;

  if (cachedJwt != null) {
    Log('Information', 'Using cached authentication token');
    headers = {
      'Content-Type': 'application/json',
      Authorization: 'Bearer ' + cachedJwt,
    };
    apiResponse = await InvokeRestMethod(apiUrl + '/api/data', 'GET', headers, null);
  }

  // If no cached token or authentication failed, obtain new token
  if (cachedJwt == null || apiResponse!.statusCode == 401) {
    Log('Information', 'Cached token invalid or expired, obtaining new token');

    // Retrieve stored credentials
    var username = await GetSecret('ExternalApiUsername');
    var password = await GetSecret('ExternalApiPassword');

    if (username == null || password == null) {
      Log('Error', 'Missing API credentials');
      CancelAction('External API credentials not configured');
    }

    // Authenticate and obtain new token
    var loginPayload = {
      username: username,
      password: password,
    };

    var authResponse = await InvokeRestMethod(apiUrl + '/auth/login', 'POST', headers, loginPayload);

    if (authResponse.statusCode != 200) {
      Log('Error', 'Failed to authenticate with external API');
      CancelAction('External API authentication failed');
    }

    // Extract JWT from response
    var newJwt = authResponse.content.token;

    if (newJwt == null) {
      Log('Error', 'No token returned from authentication');
      CancelAction('Invalid authentication response');
    }

    // Cache the new JWT for future requests
    var cached = await SetSecret('ExternalApiJWT', newJwt, 'Cached authentication token');

    if (cached) {
      Log('Information', 'New authentication token cached successfully');
    } else {
      Log('Warning', 'Failed to cache authentication token');
    }

    // Retry the original request with new token
    headers = {
      'Content-Type': 'application/json',
      Authorization: 'Bearer ' + newJwt,
    };
    apiResponse = await InvokeRestMethod(apiUrl + '/api/data', 'GET', headers, null);
  }

  // Use the API response
  if (apiResponse!.statusCode == 200) {
    var data = apiResponse!.content;
    Log('Information', 'Successfully retrieved data from external API');
    // Process data...
    return data;
  } else {
    Log('Error', 'Failed to retrieve data: ' + apiResponse!.statusCode);
    return null;
  }
}
