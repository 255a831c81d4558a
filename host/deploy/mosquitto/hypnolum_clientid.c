/*
 * mosquitto plugin (2.0+): every client id belongs to one username.
 *
 * MQTT lets a client that connects with a client id already in use take it
 * over: the broker disconnects the first holder. Without this plugin any user
 * could knock hostd off the broker by connecting with its id. A client that
 * logs in as <user> may use only these ids:
 *
 *   <user>             <user>-<anything>
 *   hypnolum-<user>    hypnolum-<user>-<anything>   (hostd: hypnolum-<host id>,
 *                                                    -circles, -pod-<pod id>)
 *   auto-<anything>    (the broker's own name for a client that sent no id;
 *                       a random UUID nobody else can guess)
 *
 * Anything else, or a client without a username, is refused as "not
 * authorised" and logged. An id that passes is then checked as usual (password
 * file), so this plugin only ever refuses. No username may be another one
 * followed by "-" (not both "hostd" and "hostd-1"): the shorter would own the
 * longer one's ids.
 *
 * Build: make (needs gcc and Debian's mosquitto-dev and libmosquitto-dev).
 * Use:   plugin /usr/local/lib/hypnolum/hypnolum_clientid.so
 */
#include <stdbool.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id = NULL;

static const char HOSTD_PREFIX[] = "hypnolum-";
static const char AUTO_PREFIX[] = "auto-"; /* mosquitto's default auto_id_prefix */

/* id is prefix + user, alone or followed by "-..." */
static bool owned_by(const char *id, const char *prefix, const char *user)
{
	size_t plen = strlen(prefix);
	size_t ulen = strlen(user);

	if(strncmp(id, prefix, plen) != 0) return false;
	id += plen;
	if(strncmp(id, user, ulen) != 0) return false;
	return id[ulen] == '\0' || id[ulen] == '-';
}

static bool allowed(const char *id, const char *user)
{
	return owned_by(id, "", user) || owned_by(id, HOSTD_PREFIX, user)
		|| strncmp(id, AUTO_PREFIX, sizeof(AUTO_PREFIX) - 1) == 0;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *id = mosquitto_client_id(ed->client);

	(void)event;
	(void)userdata;
	if(ed->username != NULL && ed->username[0] != '\0' && id != NULL && allowed(id, ed->username)){
		return MOSQ_ERR_PLUGIN_DEFER; /* the password file decides */
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "hypnolum_clientid: client id \"%s\" does not belong to user \"%s\": refused",
			id ? id : "", ed->username ? ed->username : "");
	return MOSQ_ERR_AUTH;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
